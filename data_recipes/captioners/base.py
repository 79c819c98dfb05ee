"""The captioner interface: captions for a source video's clips, or None where it has none."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Optional

from data_recipes.records import ClipRecord


class Captioner(ABC):
    """Writes ``caption`` for clips it can describe; the caption stage tries captioners in order.

    ``caption`` is batched over the clips of one source video, so a model captioner can run them
    as one batch; it returns one entry per clip, None where it has no caption.
    """

    name: ClassVar[str]

    @abstractmethod
    def caption(self, source_path: Path, clips: list[ClipRecord], output_dir: Path) -> list[Optional[str]]: ...
