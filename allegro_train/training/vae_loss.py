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
two gradients at the decoder's last trained layer W: |d nll/dW| / (|d g_loss/dW| + 1e-4), clamped
to [0, max], without gradient (taming's ``calculate_adaptive_weight``).

Those two gradients are not taken by autograd through the engine's output: DeepSpeed hooks that
output to run its backward prologue on the first gradient through it (and ZeRO-0 refuses any
backward but ``engine.backward``). Instead both losses are differentiated at a detached copy of
the reconstruction, and ``LastLayerGrad`` carries those gradients back through the decoder's last
convolutions from the activations they saw in the forward: the same numbers autograd would give.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch.nn.grad import conv2d_input, conv2d_weight, conv3d_weight

from allegro_train.models.lpips import LPIPS
from allegro_train.models.vae import DiagonalGaussian, VideoVAE


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(nll_grad: torch.Tensor, g_grad: torch.Tensor, max_weight: float = 1e4) -> torch.Tensor:
    """|d nll/dW| / (|d g_loss/dW| + 1e-4), clamped to [0, max_weight], from the two gradients at W."""
    weight = nll_grad.float().norm() / (g_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


class LastLayerGrad:
    """d loss / d W of the decoder's last trained layer, from d loss / d reconstruction.

    The decoder ends ``y = x + temp_conv_out(x)``, ``recon = conv_out(y)`` per frame. W is
    ``conv_out.weight``, or ``temp_conv_out.weight`` when the 2D layers are frozen; forward hooks
    keep the inputs of both convs of the latest forward.
    """

    def __init__(self, vae: VideoVAE):
        decoder = vae.decoder
        self.conv_out, self.temp_conv_out = decoder.conv_out, decoder.temp_conv_out
        self.temporal = not self.conv_out.weight.requires_grad
        self.inputs: dict[str, torch.Tensor] = {}
        for name, layer in (("conv_out", self.conv_out), ("temp_conv_out", self.temp_conv_out)):
            layer.register_forward_hook(lambda module, args, out, name=name: self.inputs.__setitem__(name, args[0]))

    @property
    def weight(self) -> torch.nn.Parameter:
        return self.temp_conv_out.weight if self.temporal else self.conv_out.weight

    @torch.no_grad()
    def __call__(self, grad_recon: torch.Tensor) -> torch.Tensor:
        """grad_recon [B, 3, T, H, W] -> d loss / dW, shaped as W."""
        frames = grad_recon.shape[2]
        g = rearrange(grad_recon.float(), "b c t h w -> (b t) c h w")
        y = self.inputs["conv_out"].float()  # [B*T, C, H, W]
        w_out = self.conv_out.weight.float()
        if not self.temporal:
            return conv2d_weight(y, w_out.shape, g, padding=1)
        g_y = conv2d_input(y.shape, w_out, g, padding=1)  # through conv_out, per frame
        g_y = rearrange(g_y, "(b t) c h w -> b c t h w", t=frames)  # y = x + temp(x): temp(x) gets g_y
        x = self.inputs["temp_conv_out"].float()  # [B, C, T, H, W]
        return conv3d_weight(x, self.temp_conv_out.weight.shape, g_y, padding=(1, 0, 0))


class VAELoss:
    """``generator`` and ``discriminator`` losses of one batch, with the terms to log."""

    def __init__(self, loss_cfg, disc_cfg, lpips: Optional[LPIPS], discriminator: Optional[torch.nn.Module]):
        self.l1_weight, self.kl_weight, self.lpips_weight = loss_cfg.l1, loss_cfg.kl, loss_cfg.lpips
        self.lpips, self.discriminator = lpips, discriminator
        self.gan_weight, self.adaptive, self.max_adaptive = disc_cfg.weight, disc_cfg.adaptive_weight, \
            disc_cfg.max_adaptive_weight

    def nll(self, video: torch.Tensor, recon: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reconstruction terms: l1 * L1 (+ lpips * LPIPS)."""
        l1 = (video - recon).abs().mean()
        nll = self.l1_weight * l1
        terms = {"l1": l1}
        if self.lpips is not None and self.lpips_weight > 0:
            perceptual = self.lpips.video(video, recon).mean()
            nll = nll + self.lpips_weight * perceptual
            terms["lpips"] = perceptual
        return nll, terms

    def gan_weight_at(self, video: torch.Tensor, recon: torch.Tensor,
                      last_layer_grad: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The adaptive weight, from both losses differentiated at a detached copy of ``recon``."""
        probe = recon.detach().float().requires_grad_(True)
        with torch.enable_grad():
            grad_nll, = torch.autograd.grad(self.nll(video, probe)[0], probe)
            grad_g, = torch.autograd.grad(-self.discriminator(probe).mean(), probe)
        return adaptive_weight(last_layer_grad(grad_nll), last_layer_grad(grad_g), self.max_adaptive)

    def generator(self, video: torch.Tensor, recon: torch.Tensor, posterior: DiagonalGaussian, gan_on: bool,
                  last_layer_grad: Optional[LastLayerGrad] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """video, recon [B, 3, T, H, W] (recon with its graph); the VAE's loss and its terms (detached).
        ``last_layer_grad`` is needed with the discriminator on and the adaptive weight."""
        recon = recon.float()
        nll, terms = self.nll(video, recon)
        # in fp32 whatever the engine's precision; per pixel: SD's summed KL over its pixel count
        posterior = DiagonalGaussian(torch.cat([posterior.mean, posterior.logvar], dim=1).float())
        kl = posterior.kl().mean() / video[0].numel()
        loss = nll + self.kl_weight * kl
        terms.update(nll=nll, kl=kl)
        if gan_on:
            g_loss = -self.discriminator(recon).mean()
            weight = torch.tensor(1.0)
            if self.adaptive:
                weight = self.gan_weight_at(video, recon, last_layer_grad)
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
