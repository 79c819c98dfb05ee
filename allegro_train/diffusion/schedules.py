"""The DDPM noise schedule: betas -> alphas_cumprod, and the closed forms built on it.

Allegro was trained with diffusers' ``DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4,
beta_end=0.02, beta_schedule="linear")``; this class reproduces its ``alphas_cumprod``,
``add_noise``, ``get_velocity`` and ``training_utils.compute_snr`` without importing diffusers, so
the training loss is tested against diffusers rather than depending on it.

Shapes: latents ``x0``/``noise`` are [B, C, T, H, W] (any rank >= 1 works); ``t`` is a long
tensor [B] of indices in [0, num_train_timesteps). Per-sample coefficients are reshaped to
[B, 1, ..., 1] so they broadcast over every non-batch dimension.
"""

from __future__ import annotations

import torch

BETA_SCHEDULES = ("linear", "scaled_linear")


class DDPMSchedule:
    """Variance-preserving discrete schedule: ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps``.

    ``alphas_cumprod`` [N] is built exactly as diffusers builds it: fp32 betas, fp32 cumulative
    product. A float64 table would be closer to the ideal schedule (diffusers' ``1 - a_0`` is
    1.7e-4 relatively off, as fp32 cannot hold 0.9999 exactly), but Allegro was trained with the
    fp32 table and every diffusers sampler uses it, so matching it keeps training and sampling on
    one schedule. Coefficients are taken in float64 from that table and cast after indexing.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
    ) -> None:
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps={num_train_timesteps}: must be >= 1")
        if beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
        elif beta_schedule == "scaled_linear":
            # Latent-diffusion / SD 1.x: linear in sqrt(beta), as diffusers defines it.
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
        else:
            raise ValueError(f"beta_schedule={beta_schedule!r}: use one of {BETA_SCHEDULES}")
        if not (0.0 < float(betas.min()) and float(betas.max()) < 1.0):
            raise ValueError(f"betas must lie in (0, 1); got [{float(betas.min())}, {float(betas.max())}]")

        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.betas = betas  # [N] fp32
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # [N] fp32, a_t
        # One copy a device, so a CUDA training step does not copy the table host-to-device each call.
        self._tables: dict[torch.device, torch.Tensor] = {}

    def __repr__(self) -> str:
        return (
            f"DDPMSchedule(num_train_timesteps={self.num_train_timesteps}, "
            f"beta_start={float(self.betas[0]):g}, beta_end={float(self.betas[-1]):g}, "
            f"beta_schedule={self.beta_schedule!r})"
        )

    # ------------------------------------------------------------------ coefficients

    def _alphas_cumprod_on(self, device: torch.device) -> torch.Tensor:
        table = self._tables.get(device)
        if table is None:
            # float64: 1 - a and the square roots then add no rounding beyond the fp32 table's own.
            table = self._tables[device] = self.alphas_cumprod.to(device, torch.float64)
        return table

    def _check(self, t: torch.Tensor) -> None:
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"DDPM timesteps must be an integer tensor, got {t.dtype}")

    def alpha_sigma(
        self, t: torch.Tensor, ndim: int, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """t [B] long -> (sqrt(a_t), sqrt(1 - a_t)), each [B, 1, ..., 1] with ``ndim`` dims, in ``dtype``."""
        self._check(t)
        a = self._alphas_cumprod_on(t.device)[t]  # [B] float64
        view = (-1,) + (1,) * (ndim - 1)
        return a.sqrt().to(dtype).view(view), (1.0 - a).sqrt().to(dtype).view(view)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio a_t / (1 - a_t): t [B] long -> [B] fp32 (diffusers' ``compute_snr``)."""
        self._check(t)
        a = self._alphas_cumprod_on(t.device)[t]
        return (a / (1.0 - a)).float()

    # ------------------------------------------------------------------ closed forms

    @staticmethod
    def _compute_dtype(x: torch.Tensor) -> torch.dtype:
        # bf16 / fp16 latents are mixed in fp32; fp64 stays fp64 (tests).
        return torch.promote_types(x.dtype, torch.float32)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward process q(x_t | x0): x0, noise [B, ...], t [B] -> x_t [B, ...] in x0's dtype."""
        dtype = self._compute_dtype(x0)
        alpha, sigma = self.alpha_sigma(t, x0.ndim, dtype)
        return (alpha * x0.to(dtype) + sigma * noise.to(dtype)).to(x0.dtype)

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v-prediction target v = sqrt(a_t) eps - sqrt(1 - a_t) x0 (Salimans & Ho 2022), in x0's dtype."""
        dtype = self._compute_dtype(x0)
        alpha, sigma = self.alpha_sigma(t, x0.ndim, dtype)
        return (alpha * noise.to(dtype) - sigma * x0.to(dtype)).to(x0.dtype)

    def predict_x0(self, x_t: torch.Tensor, prediction: torch.Tensor, t: torch.Tensor, kind: str) -> torch.Tensor:
        """Clean-sample estimate from a network output, for validation previews and tests.

        kind "epsilon": x0 = (x_t - sqrt(1 - a) eps) / sqrt(a); kind "v": x0 = sqrt(a) x_t - sqrt(1 - a) v.
        Shapes [B, ...]; returns x_t's dtype.
        """
        dtype = self._compute_dtype(x_t)
        alpha, sigma = self.alpha_sigma(t, x_t.ndim, dtype)
        x_t32, pred = x_t.to(dtype), prediction.to(dtype)
        if kind == "epsilon":
            x0 = (x_t32 - sigma * pred) / alpha
        elif kind == "v":
            x0 = alpha * x_t32 - sigma * pred
        else:
            raise ValueError(f"kind={kind!r}: use 'epsilon' or 'v'")
        return x0.to(x_t.dtype)
