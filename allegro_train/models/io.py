"""Weights in the diffusers folder layout: ``config.json`` plus safetensors, sharded above a size.

Shared by every model that round-trips through diffusers (the DiT's ``transformer/``, the VAE's
``vae/``). Only safetensors are read: pickled ``.bin`` weights are refused, never unpickled.
Every file is written under a temporary name and renamed, so an interrupted save never leaves a
half-written file behind a valid name.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from safetensors.torch import load_file, save_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
# diffusers writes this version into config.json; the Allegro classes exist since 0.32.
DIFFUSERS_VERSION = "0.32.0"
DEFAULT_MAX_SHARD_SIZE = "10GB"
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: int | str) -> int:
    """``"10GB"`` / ``"512MiB"`` / ``123`` -> bytes."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)\s*", size, flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"max_shard_size {size!r} is not a size like '10GB' or '512MiB'")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then rename ``tmp`` onto ``path``; the temporary file never outlives the call."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected a diffusers model folder with {CONFIG_NAME}")
    with open(path) as f:
        return json.load(f)


def write_config(config: dict[str, Any], folder: str | os.PathLike) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({**config, "_diffusers_version": DIFFUSERS_VERSION}, indent=2, sort_keys=True) + "\n"
    atomic_write(folder / CONFIG_NAME, lambda p: p.write_text(text))


def load_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read ``diffusion_pytorch_model.safetensors`` or its sharded form (via the index)."""
    folder = Path(folder)
    single, index = folder / WEIGHTS_NAME, folder / INDEX_NAME
    if single.is_file():
        return load_file(single)
    if index.is_file():
        with open(index) as f:
            weight_map: dict[str, str] = json.load(f)["weight_map"]
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            state.update(load_file(folder / shard))
        missing = sorted(set(weight_map) - set(state))
        if missing:
            raise ValueError(f"{index}: keys listed in the index but absent from the shards: {missing}")
        return state
    pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
    hint = f" (found pickled weights {pickled}, which are never loaded: convert them to safetensors)" if pickled else ""
    raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME} or {INDEX_NAME}{hint}")


def save_state_dict(
    state_dict: dict[str, torch.Tensor], folder: str | os.PathLike, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE
) -> list[str]:
    """Write safetensors in the tensors' own dtypes; shard with an index above ``max_shard_size``.

    Returns the weight file names written. Weight files of an earlier save that the new one does
    not use are removed, so a folder never mixes two saves.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    limit = parse_size(max_shard_size)
    shards: list[dict[str, torch.Tensor]] = [{}]
    shard_bytes = 0
    for name, tensor in state_dict.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and shard_bytes + nbytes > limit:
            shards.append({})
            shard_bytes = 0
        shards[-1][name] = tensor.detach().contiguous().cpu()
        shard_bytes += nbytes

    if len(shards) == 1:
        names = [WEIGHTS_NAME]
    else:
        stem = WEIGHTS_NAME.removesuffix(".safetensors")
        names = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        atomic_write(folder / name, lambda p, shard=shard: save_file(shard, str(p), metadata={"format": "pt"}))
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in state_dict.values())},
            "weight_map": {key: name for name, shard in zip(names, shards) for key in shard},
        }
        atomic_write(folder / INDEX_NAME, lambda p: p.write_text(json.dumps(index, indent=2) + "\n"))

    stale = {p.name for p in folder.glob("diffusion_pytorch_model*.safetensors*")} - set(names)
    if len(shards) > 1:
        stale.discard(INDEX_NAME)
    for name in stale:
        (folder / name).unlink()
    return names


def check_keys(expected: Iterable[str], found: Iterable[str], source: str) -> None:
    """Raise ``KeyError`` listing every missing and unexpected key."""
    expected, found = set(expected), set(found)
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        raise KeyError(f"{source}: state dict does not match the model; missing keys {missing}, unexpected keys {unexpected}")


def model_folder(folder: str | os.PathLike, subfolder: str) -> Path:
    """The folder itself when it holds config.json, else its ``subfolder`` (a pipeline folder)."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file() and (folder / subfolder / CONFIG_NAME).is_file():
        return folder / subfolder
    return folder


def config_values(
    raw: dict[str, Any], class_name: str, fields: Iterable[str], source: str, what: str
) -> dict[str, Any]:
    """The constructor arguments in a diffusers ``config.json``: ``_class_name`` must be ``class_name``,
    keys starting with ``_`` are metadata, any other key not in ``fields`` is refused by name."""
    found = raw.get("_class_name", class_name)
    if found != class_name:
        raise ValueError(f"{source}: _class_name is {found!r}, expected {class_name!r}")
    fields = set(fields)
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in fields)
    if unknown:
        raise ValueError(f"{source}: unknown {what} config keys {unknown}")
    return {k: v for k, v in raw.items() if k in fields}


def load_model(build: Callable[[], "torch.nn.Module"], folder: str | os.PathLike,
               torch_dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> "torch.nn.Module":
    """``build()`` on the meta device, then fill it from ``folder``'s safetensors in place, key for key.

    The model never exists twice in memory. Dtypes are kept unless ``torch_dtype`` is given.
    """
    with torch.device("meta"):
        model = build()
    state = load_state_dict(folder)
    check_keys(model.state_dict().keys(), state.keys(), str(folder))
    if torch_dtype is not None:
        state = {k: v.to(torch_dtype) for k, v in state.items()}
    model.load_state_dict(state, assign=True)
    return model.to(device)
