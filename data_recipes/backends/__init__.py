"""Where per-video work runs: ``local`` (this process or a process pool) or ``ray`` (Ray Data over a
cluster). A backend only needs ``map(fn, tasks, desc)``, yielding results as they finish."""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

from data_recipes.backends.local import LocalBackend
from data_recipes.config import Backend, CurateConfig

if TYPE_CHECKING:
    from data_recipes.backends.ray import RayBackend


def build_backend(cfg: CurateConfig) -> Union[LocalBackend, RayBackend]:
    if Backend(cfg.backend) is Backend.ray:
        from data_recipes.backends.ray import RayBackend  # Ray only when asked for

        return RayBackend(cfg.ray)
    return LocalBackend(cfg.workers)


__all__ = ["LocalBackend", "build_backend"]
