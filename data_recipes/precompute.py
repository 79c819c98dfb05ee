"""Precompute VAE moments and T5 states for raw shards, for training with ``data.precomputed=true``.

    python data_recipes/precompute.py shards='/data/raw/{000000..000099}.tar' output_dir=/data/pre \
        vae=/models/Allegro text_encoder=/models/Allegro \
        buckets='[{frames: 88, height: 720, width: 1280}]' vae_tiling.enabled=true

Other keys (data_recipes/precompute_config.py): device, caption_text, rank / world_size, seed,
max_length, vae_tiling.tile / .overlap. A rerun skips finished output shards; see docs/text.md.
"""

import logging
from typing import cast

import hydra
from omegaconf import DictConfig

from data_recipes.encode_shards import run
from data_recipes.precompute_config import CONFIG_DIR, CONFIG_NAME, PrecomputeConfig, validate


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    validate(cast(PrecomputeConfig, cfg))
    summary = run(cast(PrecomputeConfig, cfg))
    logging.getLogger("data_recipes.precompute").info(
        "%d of %d samples written (%d of %d shards done); summary in %s/summary.json",
        summary["samples_written"], summary["samples_in"], summary["shards_done"], summary["shards_in"],
        cfg.output_dir)


if __name__ == "__main__":
    main()
