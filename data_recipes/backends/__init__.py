"""Where per-video work runs. ``local`` is built; a Ray Data backend for clusters is planned
(config validation refuses ``backend=ray`` until then). A backend only needs ``map``."""

from data_recipes.backends.local import LocalBackend
from data_recipes.config import Backend, CurateConfig


def build_backend(cfg: CurateConfig) -> LocalBackend:
    if Backend(cfg.backend) is not Backend.local:
        raise NotImplementedError(f"backend={cfg.backend!r} is not built yet; use backend=local")
    return LocalBackend(cfg.workers)


__all__ = ["LocalBackend", "build_backend"]
