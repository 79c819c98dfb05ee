"""Compose ``configs/`` into a validated ``TrainConfig``, for scripts, notebooks and launchers.

Launchers take the command line through ``hydra_entry`` (a ``@hydra.main`` that validates first);
everything else calls ``load_config(overrides)``. Both fail before any model is built, with an
error naming the bad key.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, cast

import hydra
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from allegro_train.config.schema import ConfigError, TrainConfig, validate

# configs/ sits at the repository root, beside the package, so editable installs and checkouts
# find it; a wheel does not ship it (pass config_dir then).
DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CONFIG_NAME = "config"


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


def load_config(overrides: Sequence[str] = (), config_dir_path: Optional[str | Path] = None) -> TrainConfig:
    """Compose ``config.yaml`` with Hydra-syntax ``overrides`` (``["+stage=720p", "optim.lr=2e-5"]``).

    Returns a struct-mode DictConfig typed as ``TrainConfig``: unknown keys and ill-typed values
    raise on assignment too. Raises ``ConfigError`` naming the key for any bad key, type, enum
    value or failed ``validate`` check.
    """
    cfg = compose_config(config_dir(config_dir_path), CONFIG_NAME, overrides, ConfigError)
    validate(cast(TrainConfig, cfg))
    return cast(TrainConfig, cfg)


def compose_config(directory: str | Path, name: str, overrides: Sequence[str], error: type[Exception]) -> DictConfig:
    """Compose ``name``.yaml in ``directory`` with Hydra-syntax ``overrides``; a Hydra or OmegaConf
    error becomes ``error`` carrying the whole message chain (the inner message names the key).
    Shared by the training, curation and precompute command lines."""
    try:
        with initialize_config_dir(config_dir=str(directory), version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise error(_error_chain(err)) from err


def hydra_entry(task_fn: Callable[[TrainConfig], Any]) -> Callable[[], Any]:
    """Turn ``task_fn(cfg)`` into a launcher ``main()`` that reads the command line with Hydra.

        @hydra_entry
        def main(cfg: TrainConfig) -> None: ...

        if __name__ == "__main__":
            main()

    Equivalent to ``@hydra.main(config_path=<configs>, config_name="config", version_base="1.3")``
    with ``validate(cfg)`` as the first statement, so a bad config exits non-zero at start-up.
    """

    @functools.wraps(task_fn)
    def validated(cfg: DictConfig) -> Any:
        validate(cast(TrainConfig, cfg))
        return task_fn(cast(TrainConfig, cfg))

    return hydra.main(config_path=str(config_dir()), config_name=CONFIG_NAME, version_base="1.3")(validated)
