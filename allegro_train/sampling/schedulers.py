"""The diffusers schedulers sampling can use, chosen by name, configured as the released weights.

The noise schedule must be the one the DiT was trained with (DDPM, 1000 steps, linear betas
1e-4..0.02, epsilon prediction), so every scheduler is built from one base config: the
checkpoint's ``scheduler/scheduler_config.json`` when it has one, else ``RELEASED_CONFIG``.
Switching the sampler (Euler ancestral -> DPM-Solver++) changes the solver, never the schedule.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# name -> diffusers class name; "euler_ancestral" is what the released pipeline ships.
SCHEDULERS: dict[str, str] = {
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpm_solver++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
}
DEFAULT_SCHEDULER = "euler_ancestral"

# The released weights' scheduler/scheduler_config.json (EulerAncestralDiscreteScheduler).
RELEASED_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "timestep_spacing": "linspace",
    "steps_offset": 0,
}
CONFIG_FILE = "scheduler_config.json"


def read_scheduler_config(folder: str | os.PathLike | None) -> dict[str, Any]:
    """The base config: ``folder/scheduler_config.json`` if ``folder`` is given, else the released one."""
    if folder is None:
        return dict(RELEASED_CONFIG)
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a diffusers scheduler/ folder holds {CONFIG_FILE}")
    with open(path) as f:
        return json.load(f)


def build_scheduler(name: str | None = None, folder: str | os.PathLike | None = None):
    """A diffusers scheduler ``name`` (a key of ``SCHEDULERS``) on the base config of ``folder``.

    ``name=None`` keeps the checkpoint's own class (its config's ``_class_name``), else Euler ancestral.
    """
    base = read_scheduler_config(folder)
    if name is None:
        class_name = base.get("_class_name", SCHEDULERS[DEFAULT_SCHEDULER])
        if class_name not in SCHEDULERS.values():
            raise ValueError(f"{Path(folder) / CONFIG_FILE}: _class_name {class_name!r} is not one of "
                             f"{sorted(SCHEDULERS.values())}; pass scheduler= one of {sorted(SCHEDULERS)}")
    elif name in SCHEDULERS:
        class_name = SCHEDULERS[name]
    else:
        raise ValueError(f"scheduler={name!r}: unknown; choose one of {sorted(SCHEDULERS)}")
    import diffusers  # lazy: the models and the trainer import this package without needing diffusers

    # from_config keeps the keys the class knows (betas, prediction type, spacing) and drops the rest.
    return getattr(diffusers, class_name).from_config(base)
