"""Export a diffusers pipeline folder: ``python launch/export.py checkpoint=PATH out=DIR``.

Keys (allegro_train/sampling/config.py): vae, text_encoder (for a run checkpoint), scheduler,
overwrite. ``diffusers.AllegroPipeline.from_pretrained(DIR)`` loads the result.
"""

from typing import cast

import hydra
from omegaconf import DictConfig

from allegro_train.sampling.command import run_export
from allegro_train.sampling.config import CONFIG_DIR, ExportConfig, validate_export


@hydra.main(config_path=str(CONFIG_DIR), config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    validate_export(cast(ExportConfig, cfg))
    run_export(cast(ExportConfig, cfg))


if __name__ == "__main__":
    main()
