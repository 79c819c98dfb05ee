"""Compose ``configs/`` into a validated config, for scripts, notebooks and launchers.

Two roots share the groups under ``configs/``: ``config.yaml`` (the DiT's ``TrainConfig``, the
default) and ``train_vae.yaml`` (``VAETrainConfig``, ``config_name=VAE_CONFIG_NAME``). Launchers
take the command line through ``hydra_entry`` (a ``@hydra.main`` that validates first); everything
else calls ``load_config(overrides)``. Both fail before any model is built, with an error naming
the bad key.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import hydra
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from allegro_train.config.schema import ConfigError, validate
from allegro_train.config.vae_schema import validate_vae

# configs/ sits at the repository root, beside the package, so editable installs and checkouts
# find it; a wheel does not ship it (pass config_dir then).
DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CONFIG_NAME = "config"
VAE_CONFIG_NAME = "train_vae"
# Each root's validation; it receives the composed DictConfig.
VALIDATORS: dict[str, Callable[[Any], None]] = {CONFIG_NAME: validate, VAE_CONFIG_NAME: validate_vae}


def _validator(config_name: str) -> Callable[[Any], None]:
    if config_name not in VALIDATORS:
        raise ConfigError(f"config_name={config_name!r}: the roots under configs/ are {sorted(VALIDATORS)}")
    return VALIDATORS[config_name]


def config_dir(path: Optional[str | Path] = None) -> Path:
    """The absolute configs directory; raise ``FileNotFoundError`` saying where it was looked for."""
    directory = Path(path).resolve() if path is not None else DEFAULT_CONFIG_DIR
    if not (directory / f"{CONFIG_NAME}.yaml").is_file():
        raise FileNotFoundError(
            f"no {CONFIG_NAME}.yaml in {directory}: allegro_train composes the configs/ folder of its "
            "repository checkout; install with `pip install -e .` from the checkout or pass config_dir"
        )
    return directory


def _error_chain(err: BaseException) -> str:
    """Hydra wraps the OmegaConf error that names the key; keep every message in the chain."""
    messages: list[str] = []
    current: Optional[BaseException] = err
    while current is not None:
        text = str(current).strip()
        if text and text not in messages:
            messages.append(text)
        current = current.__cause__ or current.__context__
    return "\n".join(messages)


def load_config(overrides: Sequence[str] = (), config_dir_path: Optional[str | Path] = None,
                config_name: str = CONFIG_NAME) -> Any:
    """Compose ``<config_name>.yaml`` with Hydra-syntax ``overrides`` (``["+stage=720p", "optim.lr=2e-5"]``).

    Returns a struct-mode DictConfig typed as the root's schema (``TrainConfig``, or
    ``VAETrainConfig`` for ``config_name="train_vae"``): unknown keys and ill-typed values raise on
    assignment too. Raises ``ConfigError`` naming the key for any bad key, type, enum value or
    failed validation check.
    """
    check = _validator(config_name)
    cfg = compose_config(config_dir(config_dir_path), config_name, overrides, ConfigError)
    check(cfg)
    return cfg


def load_vae_config(overrides: Sequence[str] = (), config_dir_path: Optional[str | Path] = None) -> Any:
    """``load_config`` of the VAE trainer's root: ``load_vae_config(["+stage=vae_pretrain", ...])``."""
    return load_config(overrides, config_dir_path, VAE_CONFIG_NAME)


def compose_config(directory: str | Path, name: str, overrides: Sequence[str], error: type[Exception]) -> DictConfig:
    """Compose ``name``.yaml in ``directory`` with Hydra-syntax ``overrides``; a Hydra or OmegaConf
    error becomes ``error`` carrying the whole message chain (the inner message names the key).
    Shared by the training, curation and precompute command lines."""
    try:
        with initialize_config_dir(config_dir=str(directory), version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise error(_error_chain(err)) from err


def hydra_entry(task_fn: Optional[Callable[[Any], Any]] = None, *, config_name: str = CONFIG_NAME) -> Any:
    """Turn ``task_fn(cfg)`` into a launcher ``main()`` that reads the command line with Hydra.

        @hydra_entry                                  # or @hydra_entry(config_name="train_vae")
        def main(cfg: TrainConfig) -> None: ...

        if __name__ == "__main__":
            main()

    Equivalent to ``@hydra.main(config_path=<configs>, config_name=config_name, version_base="1.3")``
    with the root's validation as the first statement, so a bad config exits non-zero at start-up.
    """
    check = _validator(config_name)

    def wrap(fn: Callable[[Any], Any]) -> Callable[[], Any]:
        @functools.wraps(fn)
        def validated(cfg: DictConfig) -> Any:
            check(cfg)
            return fn(cfg)

        return hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(validated)

    return wrap(task_fn) if task_fn is not None else wrap
