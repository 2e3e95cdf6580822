"""Samplers against closed forms: oracle denoisers, the DDIM(eta=1) = DDPM(small) identity, seeds."""

import pytest
import torch

from conftest import GaussianOracle, PointMassOracle, seeded_generators
from tinydiffusion.errors import UsageError
from tinydiffusion.core.samplers import SAMPLERS, ddim, ddpm
from tinydiffusion.core.schedule import Schedule
from tinydiffusion.vocab import SPACINGS


def _x_T(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 2, 7, 25, 100])
def test_deterministic_ddim_lands_on_the_point_mass(steps, spacing):
    s = Schedule.linear(100)
    x_star = torch.linspace(-0.9, 0.9, 3 * 4 * 4, dtype=torch.float64).view(1, 3, 4, 4)
    out = ddim(PointMassOracle(s, x_star), s, _x_T((5, 3, 4, 4)), steps=steps, spacing=spacing)
    assert torch.allclose(out, x_star.expand_as(out), atol=1e-9)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_lands_on_the_point_mass(name):
    s = Schedule.cosine(60)
    x_star = torch.full((1, 1, 2, 2), 0.25, dtype=torch.float64)
    out = SAMPLERS[name](PointMassOracle(s, x_star), s, _x_T((4, 1, 2, 2)), steps=13,
                         generator=torch.Generator().manual_seed(3))
    assert torch.allclose(out, x_star.expand_as(out), atol=1e-9)


@pytest.mark.parametrize("variance", ["large", "small"])
def test_ddpm_reproduces_the_gaussian_mean_and_variance(variance):
    s, mu, sd = Schedule.linear(500), 0.5, 0.3
    x = ddpm(GaussianOracle(s, mu, sd), s, _x_T((4000, 1, 2, 2)), variance=variance,
             generator=torch.Generator().manual_seed(1))
    # 16,000 draws: the standard error of the mean is 0.0024 and of the std about 0.6 %.
    assert x.mean().item() == pytest.approx(mu, abs=0.01)
    assert x.std().item() == pytest.approx(sd, rel=0.03)


def test_ddim_with_many_steps_reproduces_the_gaussian():
    s, mu, sd = Schedule.linear(500), -0.2, 0.4
    x = ddim(GaussianOracle(s, mu, sd), s, _x_T((4000, 1, 2, 2)), steps=250)
    assert x.mean().item() == pytest.approx(mu, abs=0.01)
    assert x.std().item() == pytest.approx(sd, rel=0.03)


def test_ddpm_without_extra_noise_collapses_toward_the_mean():
    s, mu, sd = Schedule.linear(500), 0.5, 0.3
    x = ddpm(GaussianOracle(s, mu, sd), s, _x_T((2000, 1, 2, 2)), extra_noise=False)
    assert x.mean().item() == pytest.approx(mu, abs=0.02)
    assert x.std().item() < 0.5 * sd  # the course's demonstration: samples lose their variety


@pytest.mark.parametrize("steps", [500, 100, 17])
def test_ddim_eta_one_equals_ddpm_small_variance_given_the_same_noise(steps):
    s = Schedule.linear(500)
    model = GaussianOracle(s, 0.1, 0.5)
    x_T = _x_T((6, 1, 3, 3))
    a = ddim(model, s, x_T, steps=steps, eta=1.0, generator=seeded_generators(6))
    b = ddpm(model, s, x_T, steps=steps, variance="small", generator=seeded_generators(6))
    assert torch.allclose(a, b, atol=1e-10, rtol=0)


def _random_net(seed=0):
    from tinydiffusion.models import build_model, preset

    torch.manual_seed(seed)
    net = build_model(preset("tiny", image_size=8, context_width=3, T=50)).double()
    torch.nn.init.normal_(net.out.weight, std=0.05)  # the zero-initialised output would predict 0
    return net.eval()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_last_step_lands_exactly_on_the_predicted_x0(name):
    s, net = Schedule.linear(50), _random_net()
    seen = []
    out = SAMPLERS[name](net, s, _x_T((2, 3, 8, 8)), torch.eye(3)[:2].double(), steps=9,
                         generator=torch.Generator().manual_seed(0), callback=lambda *a: seen.append(a))
    i, t, x_t, x0_hat = seen[-1]
    assert len(seen) == 9 and i == 8 and t == s.timesteps(9)[-1]
    assert torch.equal(out, x0_hat)


def test_callback_records_the_trajectory_in_order():
    s, net, seen = Schedule.linear(50), _random_net(), []
    ddim(net, s, _x_T((1, 3, 8, 8)), steps=5, callback=lambda i, t, x_t, x0: seen.append((i, t)))
    assert seen == list(enumerate(s.timesteps(5)))


def test_image_depends_on_its_seed_not_on_its_batch():
    s, net = Schedule.linear(50), _random_net(1)
    x_T = torch.stack([_x_T((3, 8, 8), seed) for seed in range(4)])
    ctx = torch.eye(3)[[0, 1, 2, 0]].double()
    full = ddpm(net, s, x_T, ctx, steps=20, generator=seeded_generators(4))
    part = ddpm(net, s, x_T[2:], ctx[2:], steps=20, generator=seeded_generators(2, start=2))
    assert torch.allclose(full[2:], part, atol=1e-10)
    again = ddim(net, s, x_T[1:2], ctx[1:2], steps=20, eta=0.5, generator=seeded_generators(1, start=1))
    assert torch.allclose(ddim(net, s, x_T, ctx, steps=20, eta=0.5, generator=seeded_generators(4))[1:2], again, atol=1e-10)


def test_bad_sampler_options_are_named():
    s, model = Schedule.linear(10), PointMassOracle(Schedule.linear(10), torch.zeros(1, 1, 1, 1))
    with pytest.raises(UsageError, match="eta=1.5"):
        ddim(model, s, torch.zeros(1, 1, 1, 1), eta=1.5)
    with pytest.raises(UsageError, match="variance='huge'"):
        ddpm(model, s, torch.zeros(1, 1, 1, 1), variance="huge")
    with pytest.raises(UsageError, match="steps=11"):
        ddim(model, s, torch.zeros(1, 1, 1, 1), steps=11)
    with pytest.raises(UsageError, match="generator"):
        ddpm(model, s, torch.zeros(2, 1, 1, 1), generator=seeded_generators(3))
