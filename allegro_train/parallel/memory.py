"""The memory model of a DiT training rank: one home for the formulas docs/parallelism.md derives.

    per-rank GPU bytes = model states (ZeRO stage, offload)  +  activations (tokens / SP, checkpointing)
                       + DeepSpeed buffers

Activations are counted from the block's code (``models/dit/block.py``): what autograd saves
for backward, per video token and per block, with activations of ``act`` bytes (2 bf16, 4 fp32),
width D and H heads (tests/parallel/test_memory.py checks it against torch's saved-tensor hooks):

    two LayerNorms' fp32 inputs           2 x 4D
    LN outputs (modulate's inputs)        2 x D act
    modulated inputs of q/k/v and FFN-in  2 x D act
    self-attention q, k, v, output        4 x D act   (output = to_out's input)
    attn1 output (gate), residual (attn2) 2 x D act
    cross-attention q, output             2 x D act
    FFN hidden before and after GELU      8 x D act
    FFN output (gate)                     1 x D act
    two attentions' logsumexp (fp32)      2 x 4H,  two LayerNorms' mean + rstd (fp32)  16
                                          = 8D + 21 D act + 8H + 16 bytes   (+ D act under SP)

plus per sample and block the cross-attention keys and values (2 L D act), the six modulation
vectors with the two (1 + scale) (8 D act) and the text mask's bias (L act). A checkpointed block
keeps only its input (D act per token), and under "selective" also its two attention kernels'
outputs and logsumexps (2 D act + 8H); backward recomputes one block at a time, so its full
activations are added once.
Outside the blocks: the final LayerNorm (4D + 8) and two D-wide inputs (2 D act) per local token,
the fp32 RoPE tables (8 head_dim per local position: cos + sin), the patch embedding's input
(C p^2 act) per token of the whole sequence (each rank of an SP group embeds all of it); per sample
the timestep and caption MLPs' inputs and hidden states, and the checkpoints' inputs. When SP
pads the keys, each block's sdpa also keeps a score bias per key (act bytes).

Under Ulysses every per-token term scales with the local tokens, ceil(N / K) x batch: the
all-to-all hands attention [N, H/K, d], the same bytes as [N/K, H, d].
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass

import torch

from allegro_train.models.dit import DiTConfig, parse_checkpointing

GIB = 2**30
# DeepSpeed's default bucket sizes (reduce / allgather 5e8 elements; ZeRO-3 keeps at most 1e9
# live parameters) leave a few GiB of flat communication buffers on every rank.
DEEPSPEED_BUFFER_BYTES = 3 * GIB
# Left for the allocator's fragmentation, the CUDA context and NCCL: plans fill at most this share.
USABLE_FRACTION = 0.9


@dataclass(frozen=True)
class Layout:
    """How one run places the DiT: ZeRO over ``world_size`` ranks, SP groups of ``sequence_parallel``."""

    world_size: int
    zero_stage: int = 2
    sequence_parallel: int = 1
    offload_optimizer: bool = False
    offload_params: bool = False
    checkpointing: str = "all"
    precision: str = "bf16"
    ema: bool = False


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per rank: on the GPU (states, activations, buffers) and in host memory (offloaded states)."""

    states: float
    activations: float
    buffers: float
    host: float

    @property
    def gpu(self) -> float:
        return self.states + self.activations + self.buffers


def block_bytes_per_token(config: DiTConfig, act: int, sequence_parallel: int = 1) -> int:
    """Saved for backward per video token by one block that is not checkpointed. Under SP the
    output projection's input is the all-to-all's fresh output rather than a view of the saved
    attention output: one more D act."""
    dim, heads = config.inner_dim, config.num_attention_heads
    return 8 * dim + (21 + (sequence_parallel > 1)) * dim * act + 8 * heads + 16


def block_bytes_per_sample(config: DiTConfig, text_len: int, act: int) -> int:
    """Saved per sample by one block, whatever the video length: text keys/values, the six modulation
    vectors with two (1 + scale), the text mask's score bias."""
    return ((2 * text_len + 8) * config.inner_dim + text_len) * act


def embedding_bytes_per_sample(config: DiTConfig, text_len: int, act: int) -> int:
    """Saved per sample outside the blocks: timestep sinusoid (256) and MLP (4D), the final layer's
    (1 + scale) (D), the caption MLP's input and hidden states and its output (the context)."""
    dim = config.inner_dim
    return (256 + 5 * dim + text_len * (config.caption_channels + 3 * dim)) * act


def rope_bytes(config: DiTConfig, tokens: int) -> int:
    """The fp32 cos and sin tables of ``tokens`` positions (one table serves the whole batch)."""
    return tokens * 8 * config.attention_head_dim


def kept_attention_bytes_per_token(config: DiTConfig, act: int) -> int:
    """What a "selective" checkpointed block keeps per token besides its input: both attention
    kernels' outputs (D act each) and fp32 logsumexps (4 H each). Under SP the self-attention
    output is [N, H/K, d] for N/K local tokens: the same bytes per local token."""
    return 2 * config.inner_dim * act + 8 * config.num_attention_heads


def saved_activation_bytes(config: DiTConfig, tokens: int, text_len: int, batch: int, checkpointing: str,
                           act: int, sequence_parallel: int = 1) -> int:
    """What autograd holds at the end of one forward on one rank (checkpointed blocks: their inputs,
    plus their attention outputs under "selective")."""
    positions = math.ceil(tokens / sequence_parallel)  # of each sample, on this rank
    local = positions * batch  # tokens this rank computes
    policy = parse_checkpointing(checkpointing)
    checkpointed = len(range(0, config.num_layers, policy.every)) if policy.every else 0
    full = config.num_layers - checkpointed
    dim, patch = config.inner_dim, config.patch_size
    per_token = block_bytes_per_token(config, act, sequence_parallel)
    kept = dim * act + (kept_attention_bytes_per_token(config, act) if policy.selective else 0)
    blocks = (full * (local * per_token + batch * block_bytes_per_sample(config, text_len, act))
              + checkpointed * local * kept)
    if checkpointed:  # the checkpoints' own inputs: the adaLN modulation (6D) and the text mask
        blocks += batch * (6 * dim * act + text_len)
    keys = positions * sequence_parallel
    if keys > tokens:  # SP padding: a [B, keys] score bias per block, a bool mask for the checkpoints
        blocks += full * batch * keys * act + (keys if checkpointed else 0)  # the mask: one expanded row
    final_layer = local * (4 * dim + 8 + 2 * dim * act)
    patch_input = tokens * batch * config.in_channels * patch**2 * act  # every SP rank embeds the whole latent
    return (blocks + final_layer + patch_input + rope_bytes(config, positions)
            + batch * embedding_bytes_per_sample(config, text_len, act))


def activation_bytes(config: DiTConfig, tokens: int, text_len: int, batch: int, checkpointing: str, act: int,
                     sequence_parallel: int = 1) -> int:
    """Peak activations of a step: the forward's saved tensors plus one block recomputed in backward
    (whose kept attention outputs are already among the saved ones)."""
    saved = saved_activation_bytes(config, tokens, text_len, batch, checkpointing, act, sequence_parallel)
    policy = parse_checkpointing(checkpointing)
    if not policy.every:
        return saved
    local = math.ceil(tokens / sequence_parallel) * batch
    recomputed = block_bytes_per_token(config, act, sequence_parallel)
    if policy.selective:
        recomputed -= kept_attention_bytes_per_token(config, act)
    return saved + local * recomputed + batch * block_bytes_per_sample(config, text_len, act)


def state_bytes(num_params: int, layout: Layout) -> tuple[float, float]:
    """(GPU, host) bytes per rank of parameters, gradients, optimizer states and EMA under ZeRO.

    Mixed precision (bf16/fp16) keeps 2-byte parameters and gradients and 12 bytes of optimizer
    state per parameter (fp32 master copy, Adam's two moments); fp32 keeps 4 + 4 and 8. ZeRO-1
    shards the optimizer states over all ranks, ZeRO-2 also the gradients, ZeRO-3 also the
    parameters; SP ranks are ZeRO ranks like any other. The EMA is one fp32 copy, sharded under
    ZeRO-3 only. Offloading the optimizer moves its states (and, from ZeRO-2, the fp32 gradient
    partitions) to the host; offloading parameters (ZeRO-3) moves their partitions.
    """
    w, s = layout.world_size, layout.zero_stage
    mixed = layout.precision != "fp32"
    param, grad, optim = (2, 2, 12) if mixed else (4, 4, 8)
    params = num_params * param / (w if s >= 3 else 1)
    grads = num_params * grad / (w if s >= 2 else 1)
    optimizer = num_params * optim / (w if s >= 1 else 1)
    ema = num_params * 4 / (w if s >= 3 else 1) if layout.ema else 0.0
    gpu, host = params + grads + optimizer + ema, 0.0
    if layout.offload_optimizer:  # DeepSpeedCPUAdam steps the fp32 partition on the host
        gpu, host = gpu - optimizer, host + optimizer
        if s >= 2:  # reduced gradient partitions go straight to the host, in fp32, for the CPU step
            gpu, host = gpu - grads, host + num_params * 4 / w
    if layout.offload_params:
        gpu, host = gpu - params, host + params
    return gpu, host


def estimate(config: DiTConfig, num_params: int, tokens: int, text_len: int, batch: int, layout: Layout) -> MemoryEstimate:
    act = 4 if layout.precision == "fp32" else 2
    gpu_states, host = state_bytes(num_params, layout)
    activations = activation_bytes(config, tokens, text_len, batch, layout.checkpointing, act,
                                   layout.sequence_parallel)
    return MemoryEstimate(gpu_states, activations, DEEPSPEED_BUFFER_BYTES, host)


class SavedActivations:
    """Context manager: bytes autograd saves for backward inside it, parameters excluded.

    Storages are counted once however many tensors view them, so the count is what stays
    resident until backward: the measurement the formulas above are checked against. Selective
    checkpointing keeps its tensors in torch's own cache, not through saved-tensor hooks: call
    ``count_checkpoint_caches()`` after the forward, before its backward, to add them.
    """

    def __init__(self, model: torch.nn.Module):
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.storages: dict[int, int] = {}
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _add(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.params:
            self.storages[storage.data_ptr()] = storage.nbytes()

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        self._add(tensor)
        return tensor

    def count_checkpoint_caches(self) -> None:
        """Add the tensors torch's selective-checkpoint caches hold now (every live cache entry of the
        process, found through the garbage collector: torch keeps them in a dispatch mode's private
        storage, ``torch.utils.checkpoint._VersionWrapper`` objects, which nothing else exposes)."""
        from torch.utils.checkpoint import _VersionWrapper

        for obj in gc.get_objects():
            if type(obj) is _VersionWrapper and isinstance(obj.val, torch.Tensor):
                self._add(obj.val)

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())

    def __enter__(self) -> "SavedActivations":
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.hooks.__exit__(*exc)
