"""Pluggable captioners; ``build_captioners`` makes those a run's ``caption`` config asks for.

Sidecar captions are built; a transformers vision-language captioner from a local path is
planned (``caption.vlm_path`` is refused by config validation until it lands).
"""

from __future__ import annotations

from data_recipes.captioners.base import Captioner
from data_recipes.captioners.sidecar import SidecarCaptioner
from data_recipes.config import CaptionConfig


def build_captioners(cfg: CaptionConfig) -> list[Captioner]:
    return [SidecarCaptioner()] if cfg.sidecar else []


__all__ = ["Captioner", "build_captioners"]
