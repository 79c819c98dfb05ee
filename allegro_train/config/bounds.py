"""Single-field bounds tables shared by the training, curation and precompute configs.

A table row is ``(keys, test, why)``: every dotted key in ``keys`` must pass ``test``, else the
failure reads ``<key>=<value>: <why>``. Torch-free on purpose (the curation config imports it in
processes that never load a model); ``allegro_train.config``'s package import does pull torch, so
torch-free callers import this module inside a function that runs in the driver only.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

Bounds = list[tuple[tuple[str, ...], Callable[[Any], bool], str]]


def config_value(cfg: Any, key: str) -> Any:
    """The value at a dotted ``key`` ("score.aesthetic.head_path") of a dataclass or DictConfig."""
    return functools.reduce(getattr, key.split("."), cfg)


def bound_failures(cfg: Any, bounds: Bounds) -> list[tuple[str, Any, str]]:
    """(key, value, why) for every key of ``bounds`` whose value in ``cfg`` fails its test, in table order."""
    failures = []
    for keys, test, why in bounds:
        for key in keys:
            value = config_value(cfg, key)
            if not test(value):
                failures.append((key, value, why))
    return failures
