"""The DeepSpeed config of a run, derived from our typed config (one home for each setting)."""

from __future__ import annotations

from typing import Any


def deepspeed_config(cfg) -> dict[str, Any]:
    """ZeRO stage, offload, precision, clipping, accumulation and AdamW for ``deepspeed.initialize``.

    The optimizer is named rather than built: torch's AdamW (``torch_adam``) on the device, and
    DeepSpeedCPUAdam when optimizer states are offloaded. Not DeepSpeed's FusedAdam: its step count
    is not in its state dict, so a resumed run's bias correction restarted and drifted from an
    uninterrupted one (caught by the mid-run resume tests).
    """
    par, opt = cfg.parallel, cfg.optim
    zero: dict[str, Any] = {"stage": par.zero_stage}
    if par.zero_stage > 0:
        zero.update(contiguous_gradients=True, overlap_comm=True)
    if par.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if par.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    precision = str(par.precision)
    return {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": opt.grad_accum_steps,
        "gradient_clipping": opt.grad_clip if opt.grad_clip is not None else 0.0,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": opt.lr, "betas": list(opt.betas), "eps": opt.eps, "weight_decay": opt.weight_decay,
                       **({} if par.offload_optimizer else {"torch_adam": True})},
        },
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        # the released recipe reduces gradients in fp32 even when training in bf16
        "communication_data_type": "fp32",
        "zero_allow_untested_optimizer": False,
        "steps_per_print": 2**62,
        "wall_clock_breakdown": False,
    }
