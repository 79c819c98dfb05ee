"""AllegroDiT: the released Allegro transformer, layer for layer, as a plain ``nn.Module``.

    latents [B, C, T, H, W] --patchify--> tokens [B, T*(H/2)*(W/2), D]
    timestep [B] --adaLN-single--> modulation [B, 6D] (+ embedded timestep [B, D])
    T5 states [B, L, 4096] --caption projection--> context [B, L, D]
    32 x AllegroBlock(tokens, context, modulation, 3D RoPE)
    final adaLN + Linear --unpatchify--> [B, C_out, T, H, W]

Parallelism (ZeRO, Ulysses) and compilation are applied from outside; nothing here touches
torch.distributed. The state dict is diffusers' ``AllegroTransformer3DModel`` key for key.
"""

from __future__ import annotations

import os

import torch
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from allegro_train.models import io
from allegro_train.models.dit.attention import resolve_backend
from allegro_train.models.dit.block import AllegroBlock, layer_norm_fp32, modulate
from allegro_train.models.dit.checkpointing import parse_checkpointing
from allegro_train.models.dit.config import DiTConfig
from allegro_train.models.dit.embeddings import AdaLNSingle, CaptionProjection, PatchEmbed
from allegro_train.models.dit.rope import rope_tables
from allegro_train.models.dit.sequence import FullSequence


class AllegroDiT(nn.Module):
    def __init__(self, config: DiTConfig, attention_backend: str = "sdpa"):
        super().__init__()
        config.validate()
        self.config = config
        dim, patch = config.inner_dim, config.patch_size
        attention_backend = resolve_backend(attention_backend)  # once, so 'auto' logs once

        self.pos_embed = PatchEmbed(config.in_channels, dim, patch)
        self.adaln_single = AdaLNSingle(dim)
        self.caption_projection = CaptionProjection(config.caption_channels, dim)
        self.transformer_blocks = nn.ModuleList(
            [AllegroBlock(config, attention_backend) for _ in range(config.num_layers)]
        )
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.proj_out = nn.Linear(dim, patch * patch * config.out_channels)
        # Splits tokens after the patch embedding and gathers them before unpatchify: the identity
        # here; sequence parallelism swaps it (allegro_train.parallel.ulysses). No parameters.
        self.sequence = FullSequence()
        self.checkpointing = parse_checkpointing("none")

    # ---------------------------------------------------------------- construction

    def init_weights(self) -> None:
        """From-scratch init as DiT / PixArt-alpha do it.

        Xavier-uniform Linears with zero bias; the patch Conv2d initialised like a Linear over its
        flattened kernel; N(0, 0.02) for the timestep MLP, the adaLN-single Linear and the caption
        MLP; cross-attention output projections and the final ``proj_out`` zeroed, so every block's
        text path starts closed and the untrained model predicts exactly zero. Scale-shift tables
        keep their N(0, 1/D) draw.
        """
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                # a fused q/k/v weight as the three [inner, dim] matrices it stands for (fan in/out)
                for weight in module.weight.chunk(3) if name.endswith("to_qkv") else (module.weight,):
                    nn.init.xavier_uniform_(weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        proj = self.pos_embed.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        timestep_mlp = self.adaln_single.emb.timestep_embedder
        for linear in (timestep_mlp.linear_1, timestep_mlp.linear_2, self.adaln_single.linear,
                       self.caption_projection.linear_1, self.caption_projection.linear_2):
            nn.init.normal_(linear.weight, std=0.02)
        for block in self.transformer_blocks:
            nn.init.zeros_(block.attn2.to_out[0].weight)
            nn.init.zeros_(block.attn2.to_out[0].bias)
            nn.init.normal_(block.scale_shift_table, std=self.config.inner_dim**-0.5)
        nn.init.normal_(self.scale_shift_table, std=self.config.inner_dim**-0.5)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def set_activation_checkpointing(self, policy: str | int) -> None:
        """Recompute blocks' activations in backward: "none", "all", "every_<k>", "selective"
        (``models/dit/checkpointing.py``)."""
        self.checkpointing = parse_checkpointing(policy)

    def fuse_qkv(self) -> None:
        """One q/k/v Linear per self-attention (``Attention.fuse_qkv``); the state dict keeps diffusers'
        keys. Apply after loading or ``init_weights()``, before compiling, LoRA and DeepSpeed."""
        for block in self.transformer_blocks:
            block.attn1.fuse_qkv()

    def compile_blocks(self, **compile_kwargs) -> None:
        """``torch.compile`` each block in place (``nn.Module.compile``), whole-graph.

        Blocks compile without graph breaks (a test checks with ``torch._dynamo.explain``), so the
        compiler fuses modulation, RoPE and the norms around the matmuls. Compiling in place keeps
        parameter names, so checkpoints and diffusers export are unaffected; one compiled graph
        serves all 32 identical blocks.
        """
        for block in self.transformer_blocks:
            block.compile(fullgraph=True, **compile_kwargs)

    def set_attention_backend(self, backend: str) -> None:
        resolved = resolve_backend(backend)  # once, so 'auto' logs once and a bad name fails once
        for block in self.transformer_blocks:
            block.attn1.core.backend = block.attn2.core.backend = resolved

    # ---------------------------------------------------------------- forward

    def rotary_embedding(self, grid: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [T*H*W, head_dim] for a token grid, with the config's interpolation scales."""
        c = self.config
        scales = (c.interpolation_scale_t, c.interpolation_scale_h, c.interpolation_scale_w)
        return rope_tables(grid, c.attention_head_dim, scales, device=device)

    def token_grid(self, latents: torch.Tensor) -> tuple[int, int, int]:
        """(T, H/p, W/p) of latents [B, C, T, H, W]; ``ValueError`` when H or W does not tile into patches."""
        _, _, frames, height, width = latents.shape
        patch = self.config.patch_size
        if height % patch or width % patch:
            raise ValueError(f"latent grid {frames}x{height}x{width}: H and W must be divisible by patch {patch}")
        return frames, height // patch, width // patch

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text_states: torch.Tensor,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """latents [B, C, T, H, W]; timestep [B]; text_states [B, L, caption_channels];
        text_mask [B, L] (1 keep, 0 pad) -> prediction [B, C_out, T, H, W]."""
        grid = self.token_grid(latents)
        x = self.pos_embed(latents)  # [B, N, D]
        modulation, embedded_timestep = self.adaln_single(timestep, x.dtype)  # [B, 6D], [B, D]
        return self.denoise_tokens(x, grid, modulation, embedded_timestep, text_states, text_mask)

    def denoise_tokens(
        self,
        x: torch.Tensor,
        grid: tuple[int, int, int],
        modulation: torch.Tensor,
        embedded_timestep: torch.Tensor,
        text_states: torch.Tensor,
        text_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Embedded tokens x [B, N, D] -> the blocks and the final layer -> [B, C_out, T, H, W].

        Shared with the TI2V variant, which embeds more inputs into ``x`` and ``embedded_timestep``.
        """
        patch = self.config.patch_size
        context = self.caption_projection(text_states)  # [B, L, D]
        context_mask = None if text_mask is None else text_mask.bool()
        rope = self.rotary_embedding(grid, x.device)
        x, rope, self_mask = self.sequence.split(x, rope)  # [B, n, D]: the tokens this process computes

        for i, block in enumerate(self.transformer_blocks):
            if self.checkpointing.recomputes(i) and torch.is_grad_enabled():
                x = checkpoint(block, x, context, context_mask, modulation, rope, self_mask, use_reentrant=False,
                               context_fn=self.checkpointing.context_fn)
            else:
                x = block(x, context, context_mask, modulation, rope, self_mask)

        shift, scale = (self.scale_shift_table[None] + embedded_timestep[:, None]).chunk(2, dim=1)  # [B, 1, D]
        x = modulate(layer_norm_fp32(x, 1e-6), shift, scale)
        x = self.proj_out(x)  # [B, n, p*p*C_out]
        x = self.sequence.gather(x, grid[0] * grid[1] * grid[2])  # [B, N, p*p*C_out]
        return rearrange(
            x, "b (t h w) (ph pw c) -> b c t (h ph) (w pw)", t=grid[0], h=grid[1], w=grid[2], ph=patch, pw=patch
        )

    # ---------------------------------------------------------------- diffusers folders

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        attention_backend: str = "sdpa",
    ) -> "AllegroDiT":
        """Load a diffusers ``transformer/`` folder (or a pipeline folder holding one).

        Built on the meta device and filled from safetensors in place, so a 2.8B model never
        exists twice in memory. Dtypes are kept unless ``torch_dtype`` is given.
        """
        folder = io.model_folder(folder, "transformer")
        config = cls.config_from_dict(io.read_config(folder), source=str(folder / io.CONFIG_NAME))
        return io.load_model(lambda: cls(config, attention_backend), folder, torch_dtype, device)

    def save_pretrained(self, folder: str | os.PathLike, max_shard_size: int | str = io.DEFAULT_MAX_SHARD_SIZE) -> None:
        """Write a folder that ``diffusers.AllegroTransformer3DModel.from_pretrained`` loads (for the TI2V
        variant: the released ``AllegroTransformerTI2V3DModel``)."""
        io.save_state_dict(self.state_dict(), folder, max_shard_size)
        io.write_config(self.config_dict(), folder)

    # The config.json format; the TI2V variant writes the released TI2V class's instead.
    @classmethod
    def config_from_dict(cls, raw: dict, source: str) -> DiTConfig:
        return DiTConfig.from_diffusers_dict(raw, source=source)

    def config_dict(self) -> dict:
        return self.config.to_diffusers_dict()
