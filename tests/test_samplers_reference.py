"""The library's samplers against textbook references, solvers against a mixture oracle, more identities."""

import pytest
import torch

from conftest import MixtureOracle, PointMassOracle, seeded_generators, wasserstein_1
from reference import ddim_eq_12, ddpm_algorithm_2
from tinydiffusion.errors import UsageError
from tinydiffusion.core.guidance import cfg
from tinydiffusion.core.samplers import SAMPLERS, ddim, ddpm, dpmpp_2m, euler
from tinydiffusion.core.schedule import Schedule
from tinydiffusion.vocab import SPACINGS


def _x_T(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _mixture(schedule, s=0.3):
    return MixtureOracle(schedule, -0.6, 0.5, s)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 3, 10, 50, 200])
@pytest.mark.parametrize("variance", ["large", "small"])
def test_ddpm_equals_algorithm_2(steps, spacing, variance):
    s = Schedule.linear(200)
    model = _mixture(s)
    taus = sorted(s.timesteps(steps, spacing))
    x_T = _x_T((3, 1, 4, 4))
    ours = ddpm(model, s, x_T, steps=steps, spacing=spacing, variance=variance, generator=seeded_generators(3))
    ref = ddpm_algorithm_2(lambda x, t: model(x, t), s.alpha_bar, taus, x_T, seeded_generators(3),
                           small_variance=variance == "small")
    assert torch.allclose(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 4, 25, 200])
@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
def test_ddim_equals_equation_12(steps, spacing, eta):
    s = Schedule.cosine(200)
    model = _mixture(s)
    taus = sorted(s.timesteps(steps, spacing))
    x_T = _x_T((3, 1, 4, 4), seed=4)
    ours = ddim(model, s, x_T, steps=steps, spacing=spacing, eta=eta, generator=seeded_generators(3))
    ref = ddim_eq_12(lambda x, t: model(x, t), s.alpha_bar, taus, x_T, seeded_generators(3), eta)
    assert torch.allclose(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("steps", [1, 5, 20, 100])
def test_euler_is_ddim_written_as_an_ode_solver(steps):
    s = Schedule.linear(100)
    x_T = _x_T((4, 1, 3, 3))
    model = _mixture(s)
    assert torch.allclose(euler(model, s, x_T, steps=steps), ddim(model, s, x_T, steps=steps), atol=1e-9)


def test_dpmpp_2m_with_one_or_two_steps_is_first_order_ddim():
    s, x_T = Schedule.linear(100), _x_T((2, 1, 3, 3))
    model = _mixture(s)
    for steps in (1, 2):  # first step and final step are first order, so nothing is extrapolated
        assert torch.allclose(dpmpp_2m(model, s, x_T, steps=steps), ddim(model, s, x_T, steps=steps), atol=1e-10)
    assert not torch.allclose(dpmpp_2m(model, s, x_T, steps=5), ddim(model, s, x_T, steps=5), atol=1e-3)


@pytest.mark.parametrize("steps", [10, 20])
def test_dpm_solver_is_closer_to_the_mixture_than_ddim_at_equal_steps(steps):
    s = Schedule.linear(500)
    model = _mixture(s)
    x_T = _x_T((4000, 1, 2, 2), seed=7)  # 16,000 draws: the sampling noise in W1 is about 0.005
    w_dpm = wasserstein_1(dpmpp_2m(model, s, x_T, steps=steps), model.cdf)
    w_ddim = wasserstein_1(ddim(model, s, x_T, steps=steps), model.cdf)
    assert w_dpm < 0.7 * w_ddim, (w_dpm, w_ddim)  # measured: 0.032 vs 0.070 (10 steps), 0.020 vs 0.036 (20)


def test_deterministic_solvers_reach_the_mixture_with_many_steps():
    s = Schedule.linear(500)
    model = _mixture(s)
    x_T = _x_T((4000, 1, 2, 2), seed=8)
    for sampler in (ddim, dpmpp_2m):
        assert wasserstein_1(sampler(model, s, x_T, steps=250), model.cdf) < 0.02


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_every_sampler_works_with_x0_and_v_networks(name, prediction):
    s = Schedule.cosine(80)
    x_star = torch.full((1, 1, 2, 2), -0.3, dtype=torch.float64)
    eps_oracle = PointMassOracle(s, x_star)

    def other(x_t, t, context=None):
        eps = eps_oracle(x_t, t)
        x0 = s.eps_to_x0(x_t, t, eps)
        return x0 if prediction == "x0" else s.v_target(x0, t, eps)

    other.prediction = prediction
    x_T = _x_T((3, 1, 2, 2))
    out = SAMPLERS[name](other, s, x_T, steps=12, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, x_star.expand_as(out), atol=1e-8)
    ref = SAMPLERS[name](eps_oracle, s, x_T, steps=12, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, ref, atol=1e-8)


def test_zero_terminal_snr_needs_v_or_x0():
    s = Schedule.linear(50).rescale_zero_terminal_snr()
    x_star = torch.full((1, 1, 2, 2), 0.4, dtype=torch.float64)
    eps_oracle = PointMassOracle(s, x_star)
    with pytest.raises(UsageError, match="zero terminal SNR.*--prediction v"):
        ddim(eps_oracle, s, _x_T((2, 1, 2, 2)), steps=5)

    def v_model(x_t, t, context=None):  # exact v for the point mass, finite even where alpha_bar = 0
        ab = s.alpha_bar[t].view(-1, 1, 1, 1)
        eps = torch.where(ab > 0, eps_oracle(x_t, t), x_t)
        return s.v_target(x_star.expand_as(x_t), t, eps)

    v_model.prediction = "v"
    for name, fn in SAMPLERS.items():
        out = fn(v_model, s, _x_T((2, 1, 2, 2)), steps=7, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(out, x_star.expand_as(out), atol=1e-8), name


def test_clip_x0_clips_the_prediction():
    s = Schedule.linear(50)
    far = PointMassOracle(s, torch.full((1, 1, 2, 2), 3.0, dtype=torch.float64))
    seen = []
    out = ddim(far, s, _x_T((2, 1, 2, 2)), steps=5, clip_x0=True, callback=lambda *a: seen.append(a[3]))
    assert torch.allclose(out, torch.ones_like(out)) and all(x0.max() <= 1 for x0 in seen)
    assert torch.allclose(ddim(far, s, _x_T((2, 1, 2, 2)), steps=5), torch.full((2, 1, 2, 2), 3.0, dtype=torch.float64))


# --------------------------------------------------------------------------- guidance
def _conditional_model():
    torch.manual_seed(0)
    w = torch.randn(3, 4, dtype=torch.float64)

    def model(x_t, t, context):
        shift = torch.zeros(x_t.shape[0], 4, dtype=x_t.dtype) if context is None else context @ w
        return 0.5 * x_t + shift.view(-1, 1, 2, 2) * (1 + t.view(-1, 1, 1, 1) / 10)

    return model


def test_cfg_limits_are_exact():
    model, x, t = _conditional_model(), _x_T((5, 1, 2, 2)), torch.arange(5)
    c = torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0, 1]]
    assert torch.equal(cfg(model, 1.0)(x, t, c), model(x, t, c))
    assert torch.equal(cfg(model, 0.0)(x, t, c), model(x, t, torch.zeros_like(c)))
    u, k = model(x, t, torch.zeros_like(c)), model(x, t, c)
    assert torch.allclose(cfg(model, 4.0)(x, t, c), u + 4 * (k - u), atol=1e-12)


def test_cfg_runs_both_halves_in_one_forward_and_keeps_per_image_contexts():
    base, calls = _conditional_model(), []

    def counting(x_t, t, context):
        calls.append(x_t.shape[0])
        return base(x_t, t, context)

    x, t = _x_T((3, 1, 2, 2)), torch.tensor([1, 2, 3])
    c = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0.5, 0.5]], dtype=torch.float64)
    out = cfg(counting, 3.0)(x, t, c)
    assert calls == [6]
    for i in range(3):  # each image guided by its own context, as if alone
        assert torch.allclose(out[i:i + 1], cfg(base, 3.0)(x[i:i + 1], t[i:i + 1], c[i:i + 1]), atol=1e-12)


def test_guidance_rescale_matches_the_conditional_std():
    model, x, t = _conditional_model(), _x_T((4, 1, 2, 2)), torch.tensor([3, 3, 3, 3])
    c = torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0]]
    full = cfg(model, 5.0, rescale=1.0)(x, t, c)
    assert torch.allclose(full.std(dim=(1, 2, 3)), model(x, t, c).std(dim=(1, 2, 3)), atol=1e-10)
    half = cfg(model, 5.0, rescale=0.5)(x, t, c)
    assert torch.allclose(half, 0.5 * full + 0.5 * cfg(model, 5.0)(x, t, c), atol=1e-12)
    with pytest.raises(UsageError, match="guidance=-1"):
        cfg(model, -1.0)
    with pytest.raises(UsageError, match="guidance_rescale=2"):
        cfg(model, 2.0, rescale=2.0)
