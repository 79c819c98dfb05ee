"""Captions that come with the raw data: ``<video>.json`` ({"caption": "..."}) or ``<video>.txt``.

A sidecar describes the whole source video, so every clip cut from it gets the same caption:
right for single-scene sources (most scraped clip datasets), approximate for long videos.
When both files exist the JSON one is used. A malformed sidecar fails that video (reason
``bad_sidecar``) rather than training on a wrong caption.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from data_recipes.captioners.base import Captioner
from data_recipes.records import ClipRecord, InputError


def read_sidecar(source_path: Path) -> Optional[str]:
    """The sidecar caption of ``source_path``, or None when it has no sidecar file."""
    json_path, txt_path = source_path.with_suffix(".json"), source_path.with_suffix(".txt")
    if json_path.is_file():
        try:
            caption = json.loads(json_path.read_text(encoding="utf-8")).get("caption")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
            raise InputError("bad_sidecar", f"{json_path}: not a JSON object ({err})") from err
        if not isinstance(caption, str) or not caption.strip():
            raise InputError("bad_sidecar", f"{json_path}: needs a non-empty string under 'caption', got {caption!r}")
        return caption.strip()
    if txt_path.is_file():
        try:
            caption = txt_path.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError as err:
            raise InputError("bad_sidecar", f"{txt_path}: not UTF-8 text ({err})") from err
        if not caption:
            raise InputError("bad_sidecar", f"{txt_path}: empty caption file")
        return caption
    return None


class SidecarCaptioner(Captioner):
    name = "sidecar"

    def caption(self, source_path: Path, clips: list[ClipRecord], output_dir: Path) -> list[Optional[str]]:
        caption = read_sidecar(source_path)
        return [caption] * len(clips)
