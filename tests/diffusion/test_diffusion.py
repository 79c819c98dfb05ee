"""allegro_train.diffusion against diffusers' DDPMScheduler / compute_snr and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from allegro_train.diffusion import (
    FLOW_TIMESTEP_SCALE,
    DDPMSchedule,
    DiffusionObjective,
    drop_captions,
    logit_normal_timesteps,
    min_snr_weights,
    resolution_dependent_shift,
    sample_noise,
    shift_timesteps,
    uniform_timesteps,
)

SHAPE = (3, 4, 2, 6, 8)  # [B, C, T, H, W]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def latents(seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(SHAPE, generator=gen(seed)).to(dtype)


def edge_timesteps(batch: int = 64) -> torch.Tensor:
    t = torch.randint(0, 1000, (batch,), generator=gen(7))
    t[0], t[1] = 0, 999
    return t


def broadcast(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.view(-1, *(1,) * (ndim - 1))


class Recorder:
    """A model_fn that records its inputs and returns zeros (or a given tensor)."""

    def __init__(self, output: torch.Tensor | None = None):
        self.output = output
        self.calls: list[tuple[torch.Tensor, torch.Tensor, dict]] = []

    def __call__(self, noisy: torch.Tensor, timesteps: torch.Tensor, **cond) -> torch.Tensor:
        self.calls.append((noisy, timesteps, cond))
        return torch.zeros_like(noisy) if self.output is None else self.output


@pytest.fixture(scope="module")
def reference():
    diffusers = pytest.importorskip("diffusers")
    return diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


@pytest.fixture(scope="module")
def compute_snr():
    training_utils = pytest.importorskip("diffusers.training_utils")
    return training_utils.compute_snr


# ---------------------------------------------------------------------- schedule vs diffusers


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear"])
def test_alphas_cumprod_match_diffusers(beta_schedule):
    diffusers = pytest.importorskip("diffusers")
    kwargs = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule=beta_schedule)
    ours, ref = DDPMSchedule(**kwargs), diffusers.DDPMScheduler(**kwargs)
    assert torch.equal(ours.alphas_cumprod, ref.alphas_cumprod)  # the same fp32 table, bit for bit


def test_add_noise_and_velocity_match_diffusers(reference):
    schedule = DDPMSchedule()
    t = edge_timesteps()
    x0 = torch.randn((64, 4, 2, 3, 5), generator=gen(1))
    noise = torch.randn(x0.shape, generator=gen(2))
    torch.testing.assert_close(schedule.add_noise(x0, noise, t), reference.add_noise(x0, noise, t), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        schedule.velocity(x0, noise, t), reference.get_velocity(x0, noise, t), atol=1e-6, rtol=0
    )


def test_snr_matches_compute_snr(reference, compute_snr):
    t = edge_timesteps()
    torch.testing.assert_close(DDPMSchedule().snr(t), compute_snr(reference, t), rtol=1e-5, atol=0)


def test_predict_x0_inverts_add_noise():
    schedule = DDPMSchedule()
    t = edge_timesteps(8)
    x0 = torch.randn((8, 4, 2, 3, 5), generator=gen(1), dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=gen(2), dtype=torch.float64)
    x_t = schedule.add_noise(x0, noise, t)
    torch.testing.assert_close(schedule.predict_x0(x_t, noise, t, "epsilon"), x0)
    torch.testing.assert_close(schedule.predict_x0(x_t, schedule.velocity(x0, noise, t), t, "v"), x0)


def test_schedule_rejects_float_timesteps_and_unknown_schedule():
    with pytest.raises(TypeError):
        DDPMSchedule().snr(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="beta_schedule"):
        DDPMSchedule(beta_schedule="cosine")


# ---------------------------------------------------------------------- min-SNR weights


def test_min_snr_weights_formula(reference, compute_snr):
    t = edge_timesteps()
    snr = compute_snr(reference, t)
    ours = DDPMSchedule().snr(t)
    clipped = torch.minimum(snr, torch.tensor(5.0))
    torch.testing.assert_close(min_snr_weights(ours, 5.0, "epsilon"), clipped / snr, rtol=1e-5, atol=0)
    torch.testing.assert_close(min_snr_weights(ours, 5.0, "v"), clipped / (snr + 1), rtol=1e-5, atol=0)
    # High-noise steps (SNR < gamma) keep weight 1 for epsilon.
    assert min_snr_weights(ours, 5.0, "epsilon")[1].item() == 1.0
    with pytest.raises(ValueError):
        min_snr_weights(ours, 5.0, "flow")


# ---------------------------------------------------------------------- timesteps


def test_uniform_timesteps_range_and_reproducible():
    t = uniform_timesteps(20000, 1000, gen(0))
    assert t.dtype == torch.long and t.min() == 0 and t.max() == 999
    assert torch.equal(t, uniform_timesteps(20000, 1000, gen(0)))


def test_shift_identity_monotone_and_odds():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    assert torch.equal(shift_timesteps(t, 1.0), t)
    for shift in (0.5, 3.0, 8.8):
        s = shift_timesteps(t, shift)
        assert (s.diff() > 0).all() and s[0] == 0 and s[-1] == 1
    inner = t[1:-1]
    # The shift multiplies the noise-to-signal odds, so shifts compose by multiplication.
    shifted = shift_timesteps(inner, 3.0)
    torch.testing.assert_close(shifted / (1 - shifted), 3.0 * inner / (1 - inner))
    torch.testing.assert_close(shift_timesteps(shift_timesteps(inner, 2.0), 1.5), shift_timesteps(inner, 3.0))
    assert (shift_timesteps(inner, 3.0) > inner).all()


def test_logit_normal_timesteps():
    n = torch.randn((4096,), generator=gen(5))
    t = logit_normal_timesteps(4096, gen(5), mean=0.3, std=0.8)
    torch.testing.assert_close(t, torch.sigmoid(0.3 + 0.8 * n))
    assert t.dtype == torch.float32 and ((t > 0) & (t < 1)).all()
    shifted = logit_normal_timesteps(4096, gen(5), mean=0.3, std=0.8, shift=3.0)
    torch.testing.assert_close(shifted, shift_timesteps(t, 3.0))
    assert shifted.mean() > t.mean()


def test_resolution_dependent_shift():
    assert resolution_dependent_shift(1024) == 1.0
    assert resolution_dependent_shift(4096, base_tokens=1024, base_shift=1.5) == pytest.approx(3.0)
    assert resolution_dependent_shift(9200) == pytest.approx(math.sqrt(9200 / 1024))
    assert resolution_dependent_shift(79200, max_shift=5.0) == 5.0
    values = [resolution_dependent_shift(n) for n in (256, 1024, 9200, 79200)]
    assert values == sorted(values)


# ---------------------------------------------------------------------- noise


def test_offset_noise_is_constant_per_sample_and_channel():
    plain = sample_noise(SHAPE, gen(3))
    offset = sample_noise(SHAPE, gen(3), offset_noise=0.02)
    diff = offset - plain  # [B, C, T, H, W]: the offset term only
    per_bc = diff.flatten(2)
    torch.testing.assert_close(per_bc, per_bc[..., :1].expand_as(per_bc), atol=1e-6, rtol=0)
    # It is 0.02 * randn(B, C, 1, 1, 1), drawn after the per-element noise.
    g = gen(3)
    torch.randn(SHAPE, generator=g)
    expected = 0.02 * torch.randn((3, 4, 1, 1, 1), generator=g)
    torch.testing.assert_close(diff, expected.expand(SHAPE), atol=1e-6, rtol=0)


def test_offset_noise_statistics():
    # With a large offset the per-(sample, channel) means spread by ~offset, not ~1/sqrt(T*H*W).
    shape = (64, 4, 4, 16, 16)
    means = sample_noise(shape, gen(4), offset_noise=0.5).mean(dim=(2, 3, 4))
    plain = sample_noise(shape, gen(4)).mean(dim=(2, 3, 4))
    assert 0.4 < means.std().item() < 0.6 and plain.std().item() < 0.05


# ---------------------------------------------------------------------- objective


def recover(kind: str, x0: torch.Tensor, noisy: torch.Tensor, model_t: torch.Tensor, reference) -> torch.Tensor:
    """The target, rebuilt from what the model saw and diffusers' alphas_cumprod (fp64)."""
    x0, noisy = x0.double(), noisy.double()
    if kind == "flow":
        t = broadcast(model_t.double() / FLOW_TIMESTEP_SCALE, x0.ndim)
        return (noisy - (1 - t) * x0) / t - x0
    a = broadcast(reference.alphas_cumprod.double()[model_t], x0.ndim)
    eps = (noisy - a.sqrt() * x0) / (1 - a).sqrt()
    return eps if kind == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0


@pytest.mark.parametrize("kind", ["epsilon", "v", "flow"])
def test_perfect_model_has_zero_loss(kind):
    objective = DiffusionObjective(kind=kind)
    x0 = latents()
    target = objective.sample_inputs(x0, gen(0)).target
    out = objective.loss(Recorder(target), x0, {}, gen(0))
    assert out.loss.item() == 0.0 and out.per_sample.shape == (3,) and out.timesteps.shape == (3,)


@pytest.mark.parametrize("kind", ["epsilon", "v", "flow"])
def test_zero_model_loss_is_weighted_mean_of_target_squared(kind, reference, compute_snr):
    objective = DiffusionObjective(kind=kind, min_snr_gamma=5.0, offset_noise=0.02)
    x0 = torch.randn((16,) + SHAPE[1:], generator=gen(1))
    model = Recorder()
    out = objective.loss(model, x0, {}, gen(0))
    noisy, model_t, _ = model.calls[0]
    target = recover(kind, x0, noisy, model_t, reference)
    if kind == "flow":
        weights = torch.ones(16, dtype=torch.float64)
        assert model_t.dtype == torch.float32 and torch.equal(model_t, out.timesteps * 1000)
    else:
        snr = compute_snr(reference, model_t).double()
        weights = torch.minimum(snr, torch.tensor(5.0)) / (snr if kind == "epsilon" else snr + 1)
        assert model_t.dtype == torch.long
    expected = (weights * target.pow(2).mean(dim=(1, 2, 3, 4))).mean()
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss.double(), expected, rtol=1e-4, atol=0)


def test_without_min_snr_weights_are_one():
    out = DiffusionObjective(min_snr_gamma=None).loss(Recorder(), latents(), {}, gen(0))
    assert torch.equal(out.weights, torch.ones(3))
    torch.testing.assert_close(out.loss, out.per_sample.mean())


def test_epsilon_noise_carries_offset(reference):
    x0 = latents()
    eps = {}
    for offset in (0.0, 0.5):
        model = Recorder()
        DiffusionObjective(offset_noise=offset).loss(model, x0, {}, gen(0))
        eps[offset] = recover("epsilon", x0, model.calls[0][0], model.calls[0][1], reference)
    diff = (eps[0.5] - eps[0.0]).flatten(2)  # [B, C, T*H*W]
    torch.testing.assert_close(diff, diff[..., :1].expand_as(diff), atol=1e-3, rtol=0)
    assert diff.abs().max() > 0.01


def test_flow_interpolation_and_target():
    objective = DiffusionObjective(kind="flow", offset_noise=0.0, flow_shift=3.0)
    x0 = latents()
    model = Recorder()
    out = objective.loss(model, x0, {}, gen(0))
    g = gen(0)
    noise = torch.randn(SHAPE, generator=g)  # the objective draws noise first, then t
    t = logit_normal_timesteps(3, g, shift=3.0)
    t_b = broadcast(t, 5)
    noisy, model_t, _ = model.calls[0]
    torch.testing.assert_close(out.timesteps, t)
    torch.testing.assert_close(model_t, t * 1000)
    torch.testing.assert_close(noisy, (1 - t_b) * x0 + t_b * noise)
    batch = objective.sample_inputs(x0, gen(0))
    torch.testing.assert_close(batch.target, noise - x0)


def test_loss_is_deterministic_given_generator():
    objective = DiffusionObjective()
    x0 = latents()
    a = objective.loss(Recorder(), x0, {}, gen(0))
    b = objective.loss(Recorder(), x0, {}, gen(0))
    c = objective.loss(Recorder(), x0, {}, gen(1))
    assert torch.equal(a.per_sample, b.per_sample) and torch.equal(a.timesteps, b.timesteps)
    assert not torch.equal(a.per_sample, c.per_sample)


def test_padded_latents_do_not_affect_loss():
    objective = DiffusionObjective()
    x0 = latents()
    mask = torch.ones(SHAPE[0], 1, *SHAPE[2:])
    mask[0, :, 1] = 0  # sample 0: second frame is padding
    mask[2, :, :, 3:] = 0  # sample 2: bottom rows are padding
    garbage = x0 + 100 * torch.randn(SHAPE, generator=gen(9)) * (1 - mask)
    clean = objective.loss(Recorder(), x0, {}, gen(0), mask=mask)
    dirty = objective.loss(Recorder(), garbage, {}, gen(0), mask=mask)
    torch.testing.assert_close(clean.per_sample, dirty.per_sample)
    # A model wrong only on padding scores zero.
    target = objective.sample_inputs(x0, gen(0)).target
    wrong_on_pad = target + 50 * (1 - mask)
    assert objective.loss(Recorder(wrong_on_pad), x0, {}, gen(0), mask=mask).loss.item() == 0.0
    # The mean runs over kept elements only: sample 0 keeps its first frame, sample 1 everything.
    kept_mean = target[0, :, 0].pow(2).mean()
    torch.testing.assert_close(clean.per_sample[0], clean.weights[0] * kept_mean)
    unmasked = objective.loss(Recorder(), x0, {}, gen(0))
    torch.testing.assert_close(clean.per_sample[1], unmasked.per_sample[1])


def test_bf16_latents_loss_in_fp32():
    objective = DiffusionObjective()
    x0 = latents()
    model = Recorder()
    low = objective.loss(model, x0.bfloat16(), {}, gen(0))
    high = objective.loss(Recorder(), x0, {}, gen(0))
    assert model.calls[0][0].dtype == torch.bfloat16 and low.loss.dtype == torch.float32
    assert torch.equal(low.timesteps, high.timesteps)
    torch.testing.assert_close(low.loss, high.loss, rtol=2e-2, atol=0)


def test_cond_is_passed_as_keywords():
    states, text_mask = torch.randn(3, 5, 8), torch.ones(3, 5)
    model = Recorder()
    DiffusionObjective().loss(model, latents(), {"text_states": states, "text_mask": text_mask}, gen(0))
    cond = model.calls[0][2]
    assert cond["text_states"] is states and cond["text_mask"] is text_mask


def test_objective_rejects_bad_args():
    with pytest.raises(ValueError, match="kind"):
        DiffusionObjective(kind="x0")
    with pytest.raises(ValueError, match="min_snr_gamma"):
        DiffusionObjective(min_snr_gamma=0.0)


def test_loss_through_debug_dit_backpropagates():
    from allegro_train.models.dit.registry import dit_config
    from allegro_train.models.dit.transformer import AllegroDiT

    torch.manual_seed(0)
    model = AllegroDiT(dit_config("allegro-debug"))
    model.init_weights()
    with torch.no_grad():  # open the zero-initialised output so gradients reach every block
        model.proj_out.weight.normal_(std=0.02)
    x0 = torch.randn((2, 4, 2, 4, 4), generator=gen(1))
    cond = {"text_states": torch.randn(2, 6, 32, generator=gen(2)), "text_mask": torch.ones(2, 6)}
    out = DiffusionObjective().loss(model, x0, cond, gen(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------- caption dropout


def captions():
    states, mask = torch.randn(6, 5, 8, generator=gen(1)), torch.ones(6, 5)
    mask[:, 3:] = 0
    null_states, null_mask = torch.randn(1, 5, 8, generator=gen(2)), torch.zeros(1, 5)
    null_mask[:, 0] = 1
    return states, mask, null_states, null_mask


def test_drop_captions_p0_identity_p1_all_null():
    states, mask, null_states, null_mask = captions()
    kept_states, kept_mask = drop_captions(states, mask, null_states, null_mask, 0.0, gen(0))
    assert torch.equal(kept_states, states) and torch.equal(kept_mask, mask)
    dropped_states, dropped_mask = drop_captions(states, mask, null_states, null_mask, 1.0, gen(0))
    assert torch.equal(dropped_states, null_states.expand_as(states))
    assert torch.equal(dropped_mask, null_mask.expand_as(mask))


def test_drop_captions_reproducible_and_per_sample():
    states, mask, null_states, null_mask = captions()
    a = drop_captions(states, mask, null_states, null_mask, 0.5, gen(1))
    b = drop_captions(states, mask, null_states, null_mask, 0.5, gen(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    dropped = torch.rand(6, generator=gen(1)) < 0.5
    assert 0 < dropped.sum() < 6  # the seed gives a mix, so the check below tests both branches
    for i in range(6):
        source = (null_states[0], null_mask[0]) if dropped[i] else (states[i], mask[i])
        assert torch.equal(a[0][i], source[0]) and torch.equal(a[1][i], source[1])


def test_drop_captions_rate():
    states, mask = torch.zeros(10000, 1, 1), torch.ones(10000, 1)
    dropped, _ = drop_captions(states, mask, torch.ones(1, 1, 1), torch.ones(1, 1), 0.1, gen(0))
    assert 0.09 < dropped.mean().item() < 0.11
