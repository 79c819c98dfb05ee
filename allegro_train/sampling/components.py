"""Where each part of a sampling pipeline lives, from one ``checkpoint`` path (+ optional overrides).

Two layouts are accepted:

* a diffusers pipeline folder (the released weights, or ``launch/export.py``'s output):
  ``model_index.json``, ``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``;
* a training run: ``run.dir`` (its ``final/transformer/``), ``run.dir/final``, or a ``transformer/``
  folder itself. The run trains the DiT only, so the frozen VAE and T5 come from ``vae=`` /
  ``text_encoder=``, else from the run's ``config.yaml`` (``model.vae_pretrained``,
  ``model.text_encoder_pretrained``).

DeepSpeed checkpoints (``run.dir/checkpoints/step_N``) are refused by name: they hold optimizer
shards, not a loadable model; ``final/transformer/`` is the export of a run.
Every check here runs before any weight is read, so a wrong path fails in milliseconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

MODEL_INDEX = "model_index.json"
RUN_CONFIG = "config.yaml"
TRAINER_STATE = "trainer.json"


@dataclass(frozen=True)
class Components:
    """Folders of one pipeline; ``scheduler`` is None when the checkpoint has none (released defaults)."""

    transformer: Path
    vae: Path
    text_encoder: Path  # a folder holding text_encoder/ + tokenizer/, or one T5 folder with both
    scheduler: Optional[Path]


def _require_dir(path: Path, what: str, source: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: missing {what} (from {source})")
    return path


def _run_transformer(path: Path) -> tuple[Path, Optional[Path]]:
    """(transformer folder, run dir or None) of a training run path."""
    if (path / TRAINER_STATE).is_file():
        raise ValueError(f"checkpoint={path}: a DeepSpeed training checkpoint (optimizer and model shards), "
                         "which sampling does not read; pass the run dir, whose final/transformer/ is the "
                         "exported model, or a diffusers pipeline folder")
    if (path / "config.json").is_file():  # a transformer/ folder itself
        run = path.parents[1] if path.parent.name == "final" else None
        return path, run if run is not None and (run / RUN_CONFIG).is_file() else None
    if (path / "transformer" / "config.json").is_file():  # run.dir/final
        run = path.parent if path.name == "final" and (path.parent / RUN_CONFIG).is_file() else None
        return path / "transformer", run
    if (path / "final" / "transformer" / "config.json").is_file():
        return path / "final" / "transformer", path
    if (path / RUN_CONFIG).is_file():
        raise FileNotFoundError(f"checkpoint={path}: a run dir without final/transformer/config.json; "
                                "the run has not finished (the trainer writes final/ at its end)")
    raise FileNotFoundError(f"checkpoint={path}: neither a diffusers pipeline folder ({MODEL_INDEX}) nor a "
                            "run dir (final/transformer/) nor a transformer folder (config.json)")


def _from_run_config(run: Optional[Path], key: str) -> Optional[str]:
    """``model.<key>`` of the run's resolved config.yaml, or None."""
    if run is None:
        return None
    import yaml

    with open(run / RUN_CONFIG) as f:
        config = yaml.safe_load(f) or {}
    return (config.get("model") or {}).get(key)


def resolve_components(checkpoint: str | os.PathLike, vae: str | os.PathLike | None = None,
                       text_encoder: str | os.PathLike | None = None) -> Components:
    """The folders to load; ``FileNotFoundError`` / ``ValueError`` naming the path and the missing part."""
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint={path}: does not exist")
    if (path / MODEL_INDEX).is_file():
        source = str(path / MODEL_INDEX)
        transformer = _require_dir(path / "transformer", "transformer/", source)
        scheduler = _require_dir(path / "scheduler", "scheduler/", source)
        vae_dir = Path(vae) if vae is not None else _require_dir(path / "vae", "vae/", source)
        text_dir = Path(text_encoder) if text_encoder is not None else path
        if text_encoder is None:
            _require_dir(path / "text_encoder", "text_encoder/", source)
            _require_dir(path / "tokenizer", "tokenizer/", source)
    else:
        transformer, run = _run_transformer(path)
        scheduler = None
        vae = vae if vae is not None else _from_run_config(run, "vae_pretrained")
        text_encoder = text_encoder if text_encoder is not None else _from_run_config(run, "text_encoder_pretrained")
        for key, value in (("vae", vae), ("text_encoder", text_encoder)):
            if value is None:
                raise ValueError(f"checkpoint={path} holds only the transformer and no run config names a {key}: "
                                 f"pass {key}=FOLDER (a diffusers pipeline folder or its {key}/ folder)")
        vae_dir, text_dir = Path(vae), Path(text_encoder)
    for key, folder in (("vae", vae_dir), ("text_encoder", text_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{key}={folder}: not a folder")
    return Components(transformer=transformer, vae=vae_dir, text_encoder=text_dir, scheduler=scheduler)
