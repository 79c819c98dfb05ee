"""The built-in demo, end to end on a CPU: ``python launch/demo.py [run.dir=...] [any key of the demo config]``.

Synthetic shape videos -> curation -> VideoVAE -> precomputed latents -> DiT -> samples of
held-out prompts -> a colour and direction detector's score. Keys: allegro_train/demo/config.py;
what each step does: allegro_train/demo/pipeline.py and docs/demo.md.
"""

import logging
from typing import cast

import hydra
from omegaconf import DictConfig

from allegro_train.demo.config import CONFIG_DIR, DemoConfig, validate
from allegro_train.demo.pipeline import Demo


@hydra.main(config_path=str(CONFIG_DIR), config_name="demo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    validate(cast(DemoConfig, cfg))
    demo = Demo(cast(DemoConfig, cfg))
    result = demo.run()
    print(demo.table(result))
    print(demo.closing_lines(result))
    logging.getLogger("launch.demo").info("demo finished in %.0f s", result["seconds"]["total"])


if __name__ == "__main__":
    main()
