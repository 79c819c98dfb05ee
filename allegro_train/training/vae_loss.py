"""The VAE's training losses: taming-transformers' ``LPIPSWithDiscriminator`` (Stable Diffusion's
VAE recipe) for clips, as per-pixel means.

    nll    = l1 * |x - x^| + lpips * LPIPS(x, x^)            (means over pixels, frames)
    kl     = KL(q(z|x) || N(0, I)) summed over latent voxels / pixels per clip
    g_loss = -mean D(x^)                                        (once the discriminator is on)
    loss   = nll + kl_weight * kl + weight * adaptive * g_loss
    d_loss = (mean relu(1 - D(x)) + mean relu(1 + D(x^))) / 2   (hinge; x^ detached)

SD sums the pixel terms over each image instead of averaging them; dividing every term by the
pixel count keeps its weights' meaning (KL 1e-6, perceptual 1.0, GAN 0.5). The learned
log-variance SD puts on the NLL (zero at its start) is left out. The adaptive weight balances the
two gradients at the decoder's last trained layer: |grad nll| / (|grad g_loss| + 1e-4), clamped
to [0, max], without gradient (taming's ``calculate_adaptive_weight``).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from allegro_train.models.lpips import LPIPS
from allegro_train.models.vae import DiagonalGaussian


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """|d nll / d W| / (|d g_loss / d W| + 1e-4) at ``last_layer`` W, clamped to [0, max_weight], detached."""
    nll_grad, = torch.autograd.grad(nll, last_layer, retain_graph=True)
    g_grad, = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    weight = nll_grad.float().norm() / (g_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


class VAELoss:
    """``generator`` and ``discriminator`` losses of one batch, with the terms to log."""

    def __init__(self, loss_cfg, disc_cfg, lpips: Optional[LPIPS], discriminator: Optional[torch.nn.Module]):
        self.l1_weight, self.kl_weight, self.lpips_weight = loss_cfg.l1, loss_cfg.kl, loss_cfg.lpips
        self.lpips, self.discriminator = lpips, discriminator
        self.gan_weight, self.adaptive, self.max_adaptive = disc_cfg.weight, disc_cfg.adaptive_weight, \
            disc_cfg.max_adaptive_weight

    def generator(self, video: torch.Tensor, recon: torch.Tensor, posterior: DiagonalGaussian,
                  last_layer: Optional[torch.Tensor], gan_on: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """video, recon [B, 3, T, H, W] (recon with its graph); the VAE's loss and its terms (detached)."""
        recon = recon.float()
        l1 = (video - recon).abs().mean()
        nll = self.l1_weight * l1
        terms = {"l1": l1}
        if self.lpips is not None and self.lpips_weight > 0:
            perceptual = self.lpips.video(video, recon).mean()
            nll = nll + self.lpips_weight * perceptual
            terms["lpips"] = perceptual
        # in fp32 whatever the engine's precision; per pixel: SD's summed KL over its pixel count
        posterior = DiagonalGaussian(torch.cat([posterior.mean, posterior.logvar], dim=1).float())
        kl = posterior.kl().mean() / video[0].numel()
        loss = nll + self.kl_weight * kl
        terms.update(nll=nll, kl=kl)
        if gan_on:
            g_loss = -self.discriminator(recon).mean()
            weight = torch.tensor(1.0)
            if self.adaptive:
                weight = adaptive_weight(nll, g_loss, last_layer, self.max_adaptive)
            loss = loss + self.gan_weight * weight * g_loss
            terms.update(g_loss=g_loss, adaptive_weight=weight)
        terms["loss"] = loss
        return loss, {k: v.detach() for k, v in terms.items()}

    def discriminator_loss(self, video: torch.Tensor, recon: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Hinge loss on the real clip and the (detached) reconstruction."""
        logits_real = self.discriminator(video)
        logits_fake = self.discriminator(recon.detach().float())
        d_loss = hinge_d_loss(logits_real, logits_fake)
        return d_loss, {"d_loss": d_loss.detach(), "logits_real": logits_real.detach().mean(),
                        "logits_fake": logits_fake.detach().mean()}
