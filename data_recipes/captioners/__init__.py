"""Pluggable captioners; ``build_captioners`` makes those a run's ``caption`` config asks for, in the
order they are tried: the sidecar file beside the raw video, then a vision-language model
(``caption.vlm.path``) for clips still uncaptioned.
"""

from __future__ import annotations

from data_recipes.captioners.base import Captioner
from data_recipes.captioners.sidecar import SidecarCaptioner
from data_recipes.config import CaptionConfig


def build_captioners(cfg: CaptionConfig) -> list[Captioner]:
    captioners: list[Captioner] = [SidecarCaptioner()] if cfg.sidecar else []
    if cfg.vlm.path is not None:
        from data_recipes.captioners.vlm import VLMCaptioner  # torch and transformers only when asked for

        captioners.append(VLMCaptioner(cfg.vlm))
    return captioners


__all__ = ["Captioner", "build_captioners"]
