"""Train the VideoVAE: ``python launch/train_vae.py +stage=vae_pretrain vae.image_vae=DIR loss.lpips_path=FILE
data.shards=...`` (any Hydra override after it; root configs/train_vae.yaml, docs/vae.md)."""

import logging

from allegro_train.config import VAE_CONFIG_NAME, VAETrainConfig, hydra_entry
from allegro_train.training.vae_trainer import train_vae


@hydra_entry(config_name=VAE_CONFIG_NAME)  # composes configs/train_vae.yaml, validates before any model is built
def main(cfg: VAETrainConfig) -> None:
    summary = train_vae(cfg)
    logging.getLogger("launch.train_vae").info("summary: %s", {k: v for k, v in summary.items() if k != "losses"})


if __name__ == "__main__":
    main()
