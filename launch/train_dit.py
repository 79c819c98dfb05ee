"""Train the DiT: ``python launch/train_dit.py +stage=demo`` (any Hydra override after it)."""

import logging

from allegro_train.config import TrainConfig, hydra_entry
from allegro_train.training.trainer import train


@hydra_entry  # composes configs/, validates before any model is built
def main(cfg: TrainConfig) -> None:
    logging.getLogger("launch.train_dit").info("summary: %s", train(cfg))


if __name__ == "__main__":
    main()
