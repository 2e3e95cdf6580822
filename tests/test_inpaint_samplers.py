"""RePaint over DDIM steps (``core.edit.inpaint(sampler="ddim")``): DDIM with eta 1 is DDPM's posterior with the
small variance (so RePaint over it is RePaint over DDPM), eta 0 with nothing kept is the ddim sampler itself, the
known pixels stay exact, the plan takes ddpm or ddim only, each with its own options and default steps."""

import itertools
import math

import pytest
import torch
from conftest import MixtureOracle, seeded_generators, tiny_pipeline

from tinydiffusion.core import edit
from tinydiffusion.core.samplers import SAMPLERS, ddim_step, grid, posterior
from tinydiffusion.core.schedule import Schedule
from tinydiffusion.errors import UsageError
from tinydiffusion.vocab import INPAINT_STEPS


class Counting:
    def __init__(self, model):
        self.model, self.steps = model, []

    def __call__(self, x_t, t, context=None):
        self.steps.append(int(t[0]))
        return self.model(x_t, t, context)


def _inputs(b=3, side=6):
    x0 = torch.rand(b, 3, side, side, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    return x0, torch.rand(side, side, generator=torch.Generator().manual_seed(1)) > 0.5


@pytest.mark.parametrize("schedule", [Schedule.linear(50), Schedule.cosine(50)], ids=["linear", "cosine"])
def test_ddim_with_eta_one_is_the_ddpm_posterior_with_the_small_variance(schedule):
    """Song et al. 2021, eq. 12 with eta = 1: sqrt(ab') x0 + sqrt(1 - ab' - beta~) eps and sigma² = beta~ are the
    mean and variance of q(x_t' | x_t, x0) (Ho et al. eq. 7), for any jump t -> t' of a sub-grid and to x0."""
    x, x0_hat = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for t, t_prev in [(49, 48), (49, 30), (30, 7), (12, 11), (3, -1), (0, -1)]:
        ab_t = schedule.ab(t)
        eps_hat = (x - math.sqrt(ab_t) * x0_hat) / math.sqrt(1 - ab_t)  # the eps that goes with x0_hat at x_t
        mean, sigma = ddim_step(schedule, x0_hat, eps_hat, t, t_prev, eta=1.0)
        mu, var = posterior(schedule, x, x0_hat, t, t_prev, "small")
        assert torch.allclose(mean, mu, rtol=0, atol=1e-12) and sigma**2 == pytest.approx(var, rel=1e-12, abs=1e-15)


def test_ddim_eta_one_samples_and_inpaints_as_ddpm_small(schedule):
    """The identity through whole runs on the same generators: the samplers, and RePaint with resampling jumps."""
    model = MixtureOracle(schedule, -0.6, 0.5, 0.3)
    x_T = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = SAMPLERS["ddim"](model, schedule, x_T, steps=12, eta=1.0, generator=seeded_generators(3))
    b = SAMPLERS["ddpm"](model, schedule, x_T, steps=12, variance="small", generator=seeded_generators(3))
    assert torch.allclose(a, b, rtol=0, atol=1e-10)
    x0, mask = _inputs()
    runs = [edit.inpaint(model, schedule, x0, mask, steps=12, jump_length=3, resample=3, generator=seeded_generators(3),
                         **options) for options in ({"sampler": "ddim", "eta": 1.0}, {"variance": "small"})]
    assert torch.allclose(runs[0], runs[1], rtol=0, atol=1e-10)
    assert not torch.allclose(runs[1], edit.inpaint(model, schedule, x0, mask, steps=12, jump_length=3, resample=3,
                                                    generator=seeded_generators(3)))  # the large variance differs


def test_ddim_inpainting_with_nothing_kept_is_the_ddim_sampler_bitwise(schedule):
    """eta 0 adds no noise to the unknown part: with no pixel kept RePaint's DDIM run is ``ddim`` on its grid."""
    model = MixtureOracle(schedule, -0.6, 0.5, 0.3)
    x0, _ = _inputs()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = edit.inpaint(model, schedule, x0, torch.zeros(6, 6, dtype=torch.bool), sampler="ddim", steps=9, noise=noise,
                       generator=seeded_generators(3))
    assert torch.equal(out, SAMPLERS["ddim"](model, schedule, noise, steps=9))


@pytest.mark.parametrize("eta, resample, jump_length, strength", [(0.0, 1, 10, 1.0), (0.0, 3, 2, 1.0),
                                                                  (0.5, 2, 3, 0.6), (1.0, 3, 2, 1.0)])
def test_ddim_inpainting_keeps_the_known_pixels_exactly_on_the_ddim_grid(eta, resample, jump_length, strength,
                                                                         schedule):
    x0, mask = _inputs()
    model = Counting(MixtureOracle(schedule, -0.6, 0.5, 0.3))
    out = edit.inpaint(model, schedule, x0, mask, sampler="ddim", eta=eta, steps=10, jump_length=jump_length,
                       resample=resample, strength=strength, generator=seeded_generators(3))
    assert torch.equal(out[:, :, mask], x0[:, :, mask]) and not torch.equal(out[:, :, ~mask], x0[:, :, ~mask])
    k = edit.tail_length(strength, 10)
    g = grid("ddim", schedule, 10)
    walk = edit.repaint_walk(k, jump_length, resample)
    assert model.steps == [g[len(g) - 1 - a] for a, b in itertools.pairwise(walk) if b < a]
    assert len(model.steps) == edit.repaint_nfe(k, jump_length, resample)


def test_inpainting_refuses_other_samplers_and_the_other_samplers_option(schedule):
    model, (x0, mask) = MixtureOracle(schedule, -0.6, 0.5, 0.3), _inputs()
    for name in ("dpmpp_2m", "euler", "consistency"):
        with pytest.raises(UsageError, match=f"sampler='{name}'.*ddpm or ddim.*multistep solver"):
            edit.inpaint(model, schedule, x0, mask, sampler=name, steps=10)
    with pytest.raises(UsageError, match="eta=0.5.*no eta with ddpm"):
        edit.inpaint(model, schedule, x0, mask, steps=10, eta=0.5)
    with pytest.raises(UsageError, match="variance='small'.*no variance with ddim"):
        edit.inpaint(model, schedule, x0, mask, sampler="ddim", steps=10, variance="small")
    with pytest.raises(UsageError, match="eta=2"):
        edit.inpaint(model, schedule, x0, mask, sampler="ddim", steps=10, eta=2)


# ---------------------------------------------------------------------- the plan and Pipeline.inpaint
@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def test_plan_inpaint_takes_ddim_with_its_default_steps_and_eta(pipe):
    from tinydiffusion.sampling.edit_plans import plan_inpaint

    x, mask = torch.rand(3, 8, 8) * 2 - 1, torch.zeros(8, 8)
    mask[:, :4] = 1
    job = plan_inpaint(pipe, x, mask, "b", sampler="ddim", guidance=1.0, eta=0.5, resample=2, jump_length=3)
    s = job.settings
    assert s["sampler"] == "ddim" and s["steps"] == INPAINT_STEPS["ddim"] and s["options"]["eta"] == 0.5
    assert s["nfe"] == edit.repaint_nfe(INPAINT_STEPS["ddim"], 3, 2)
    assert plan_inpaint(pipe, x, mask, "b", guidance=1.0).settings["steps"] == INPAINT_STEPS["ddpm"]
    out = pipe.inpaint(x, mask, "b", n=2, sampler="ddim", steps=8, eta=0.3, resample=2, jump_length=3)
    assert torch.equal(out[:, :, :, :4], x[:, :, :4].expand(2, -1, -1, -1))


def test_plan_inpaint_refuses_other_samplers_naming_the_choice(pipe):
    x, mask = torch.rand(3, 8, 8) * 2 - 1, torch.zeros(8, 8)
    mask[:, :4] = 1
    with pytest.raises(UsageError, match="sampler='dpmpp_2m'.*ddpm or ddim.*history"):
        pipe.inpaint(x, mask, "b", steps=10, sampler="dpmpp_2m")
    with pytest.raises(UsageError, match="variance='small' is not an option of inpainting with ddim; it takes: "
                                         "spacing, eta, clip_x0"):
        pipe.inpaint(x, mask, "b", steps=10, sampler="ddim", variance="small")
    with pytest.raises(UsageError, match="eta=0.5 is not an option of inpainting with ddpm"):
        pipe.inpaint(x, mask, "b", steps=10, eta=0.5)
