"""Curate raw videos into shards: ``python data_recipes/curate.py input_dir=RAW output_dir=OUT``.

Any Hydra override follows (``workers=4``, ``select=finetune``,
``select.where="aesthetic >= 4.8 AND motion BETWEEN 1 AND 100"``, ``stages=[select,shard]``);
see docs/curation.md. The config is validated before any video is read.
"""

import logging
from typing import cast

import hydra
from omegaconf import DictConfig

from data_recipes.config import CONFIG_DIR, CONFIG_NAME, CurateConfig, validate
from data_recipes.pipeline import run


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    validate(cast(CurateConfig, cfg))
    report = run(cast(CurateConfig, cfg))
    logging.getLogger("data_recipes.curate").info("%d clips kept; report in %s/report.json",
                                                  report["clips_kept"], cfg.output_dir)


if __name__ == "__main__":
    main()
