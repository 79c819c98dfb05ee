"""``export_pipeline``: a checkpoint -> a complete diffusers pipeline folder for ``AllegroPipeline``.

    DIR/model_index.json   AllegroPipeline and each component's (library, class)
    DIR/transformer/       AllegroTransformer3DModel (re-saved from our DiT: keys checked on load);
                           a TI2V run's AllegroTransformerTI2V3DModel, indexed as AllegroTI2VPipeline
    DIR/vae/               AutoencoderKLAllegro (re-saved likewise)
    DIR/text_encoder/      T5EncoderModel (files copied: safetensors + config)
    DIR/tokenizer/         T5Tokenizer (files copied)
    DIR/scheduler/         the checkpoint's scheduler config, else the released one (Euler ancestral)

The folder is assembled under a temporary sibling and renamed onto ``out`` only once complete, so
an interrupted export never leaves a folder that looks loadable. An existing ``out`` is refused
unless ``overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from allegro_train.models.dit import AllegroTI2VDiT, transformer_class
from allegro_train.models.dit.ti2v import TI2V_CLASS_NAME
from allegro_train.models.io import DIFFUSERS_VERSION
from allegro_train.models.text.t5 import resolve_folders
from allegro_train.models.vae import VideoVAE
from allegro_train.sampling.components import MODEL_INDEX, resolve_components
from allegro_train.sampling.schedulers import build_scheduler

MODEL_INDEX_CONTENT = {
    "_class_name": "AllegroPipeline",
    "_diffusers_version": DIFFUSERS_VERSION,
    "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"],
    "text_encoder": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "T5Tokenizer"],
    "transformer": ["diffusers", "AllegroTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLAllegro"],
}
# Pickled weights are never carried over: diffusers and transformers would unpickle them on load.
_REFUSED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _copy_files(source: Path, target: Path) -> None:
    """Copy the plain files of ``source`` (no pickles, no subfolders) into a new ``target``."""
    target.mkdir()
    for path in sorted(source.iterdir()):
        if path.is_file() and not path.name.endswith(_REFUSED_SUFFIXES):
            shutil.copy2(path, target / path.name)


def export_pipeline(checkpoint: str | os.PathLike, out: str | os.PathLike, vae: str | os.PathLike | None = None,
                    text_encoder: str | os.PathLike | None = None, scheduler: str | None = None,
                    overwrite: bool = False) -> Path:
    """Write the pipeline folder of ``checkpoint`` (see ``resolve_components``) to ``out``; returns ``out``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"out={out}: exists; pass overwrite=true to replace it")
    parts = resolve_components(checkpoint, vae, text_encoder)
    encoder_dir, tokenizer_dir = resolve_folders(parts.text_encoder)  # checks the T5 layout before any write
    schedule = build_scheduler(scheduler, parts.scheduler)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        # Round-trip the models through our classes: a key or config mismatch fails here, not in diffusers.
        transformer_cls = transformer_class(parts.transformer)
        transformer_cls.from_pretrained(parts.transformer).save_pretrained(tmp / "transformer")
        VideoVAE.from_pretrained(parts.vae).save_pretrained(tmp / "vae")
        _copy_files(encoder_dir, tmp / "text_encoder")
        _copy_files(tokenizer_dir, tmp / "tokenizer")
        schedule.save_pretrained(tmp / "scheduler")
        index = {**MODEL_INDEX_CONTENT, "scheduler": ["diffusers", type(schedule).__name__]}
        if transformer_cls is AllegroTI2VDiT:  # the released TI2V classes (diffusers has neither)
            index.update(_class_name="AllegroTI2VPipeline", transformer=["diffusers", TI2V_CLASS_NAME])
        (tmp / MODEL_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
