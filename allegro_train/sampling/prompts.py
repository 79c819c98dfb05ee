"""``read_prompts``: a prompts file -> a list of prompts, one a line; errors name the file and line."""

from __future__ import annotations

import os
from pathlib import Path


def read_prompts(path: str | os.PathLike) -> list[str]:
    """One prompt a non-blank line (UTF-8); lines starting with ``#`` are comments.

    Raises ``FileNotFoundError`` / ``ValueError`` naming ``path`` (and the line) when the file is
    missing, not UTF-8 text, or holds no prompt, so a long batch never starts on a bad file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts_file={path}: not a file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"prompts_file={path}: not UTF-8 text ({err})") from err
    prompts = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if "\x00" in text:
            raise ValueError(f"prompts_file={path}, line {number}: holds a NUL byte; expected text, one prompt a line")
        prompts.append(text)
    if not prompts:
        raise ValueError(f"prompts_file={path}: holds no prompt (one a line; blank lines and # comments are skipped)")
    return prompts
