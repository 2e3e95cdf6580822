"""Editing against closed forms: img2img (SDEdit), RePaint inpainting and slerp interpolation with oracle denoisers,
the strength → time-grid rule pinned by a table, and the Pipeline methods on a tiny random network."""

import math

import pytest
import torch

from conftest import GaussianOracle, MixtureOracle, seeded_generators, tiny_pipeline, wasserstein_1
from tinydiffusion.core import edit
from tinydiffusion.errors import UsageError
from tinydiffusion.core.samplers import SAMPLERS, grid
from tinydiffusion.core.schedule import Schedule
from tinydiffusion.vocab import SPACINGS


def _noise(n, shape, start=0):
    """What Pipeline.run draws first from each image's generator (float32), as float64."""
    return torch.stack([torch.randn(shape, generator=g) for g in seeded_generators(n, start)]).double()


class GaussianX0Oracle:
    """Data ~ N(mu, s² I) predicting ``x0``: defined at zero terminal SNR too (``E[x0 | x_T] = mu``)."""

    prediction = "x0"

    def __init__(self, schedule, mu, s):
        self.schedule, self.mu, self.s = schedule, mu, s

    def __call__(self, x_t, t, context=None):
        ab = self.schedule.alpha_bar[t].to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1)))
        return self.mu + ab.sqrt() * self.s**2 * (x_t - ab.sqrt() * self.mu) / (ab * self.s**2 + 1 - ab)


class CorrelatedGaussianOracle:
    """Data ~ N(mu, Sigma) over the D pixels: E[x0 | x_t] = mu + a Sigma (a² Sigma + sigma² I)^-1 (x_t - a mu)."""

    def __init__(self, schedule, mu, cov):
        self.schedule, self.mu, self.cov = schedule, mu, cov

    def __call__(self, x_t, t, context=None):
        assert (t == t[0]).all()
        ab = float(self.schedule.alpha_bar[t[0]])
        a, x = math.sqrt(ab), x_t.reshape(len(x_t), -1)  # [B, D]
        cov_t = ab * self.cov + (1 - ab) * torch.eye(len(self.mu), dtype=x.dtype)
        x0 = self.mu + (a * self.cov @ torch.linalg.solve(cov_t, (x - a * self.mu).T)).T
        return ((x - a * x0) / math.sqrt(1 - ab)).view_as(x_t)


class Counting:
    def __init__(self, model):
        self.model, self.calls, self.steps = model, 0, []
        self.prediction = getattr(model, "prediction", "eps")

    def __call__(self, x_t, t, context=None):
        self.calls += 1
        self.steps.append(int(t[0]))
        return self.model(x_t, t, context)


# ---------------------------------------------------------------------- img2img
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_strength_one_is_sample_from_the_same_seed_bitwise(name, schedule):
    model = MixtureOracle(schedule, -0.6, 0.5, 0.3)
    x0 = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    gens = seeded_generators(3)
    x_T = torch.stack([torch.randn(1, 4, 4, generator=g) for g in gens]).double()  # as Pipeline.run: same generators
    sampled = SAMPLERS[name](model, schedule, x_T, steps=10, generator=gens)
    edited = edit.img2img(model, schedule, x0, strength=1.0, sampler=name, steps=10, generator=seeded_generators(3))
    assert torch.equal(edited, sampled)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_strength_one_ignores_the_input_at_zero_terminal_snr(spacing):
    s = Schedule.linear(60).rescale_zero_terminal_snr()
    model = GaussianX0Oracle(s, 0.2, 0.4)
    a = edit.img2img(model, s, torch.zeros(2, 1, 3, 3, dtype=torch.float64), strength=1.0, sampler="ddpm", steps=12,
                     spacing=spacing, generator=seeded_generators(2))
    b = edit.img2img(model, s, torch.ones(2, 1, 3, 3, dtype=torch.float64), strength=1.0, sampler="ddpm", steps=12,
                     spacing=spacing, generator=seeded_generators(2))
    assert torch.equal(a, b)


# The documented rule, written out for T = 50 and N = 10: k = max(1, floor(s·N + 1/2)) steps from the grid's end.
TABLE = [
    ("trailing", 0.3, [14, 9, 4]), ("trailing", 0.6, [29, 24, 19, 14, 9, 4]), ("trailing", 0.01, [4]),
    ("trailing", 0.96, [49, 44, 39, 34, 29, 24, 19, 14, 9, 4]), ("leading", 0.3, [10, 5, 0]),
    ("leading", 0.5, [20, 15, 10, 5, 0]), ("linspace", 0.3, [11, 5, 0]), ("linspace", 0.74, [33, 27, 22, 16, 11, 5, 0]),
]


@pytest.mark.parametrize("spacing, strength, steps", TABLE)
def test_strength_table_for_ten_steps_of_fifty(spacing, strength, steps, schedule):
    model = Counting(GaussianOracle(schedule, 0.1, 0.5))
    edit.img2img(model, schedule, torch.zeros(1, 1, 2, 2, dtype=torch.float64), strength=strength, sampler="ddim",
                 steps=10, spacing=spacing, generator=seeded_generators(1))
    assert model.steps == steps


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_strength_rule_for_every_sampler_and_spacing(name, spacing, schedule):
    """The steps taken are the last round(s·N) of the sampler's own grid (its default N too), one network
    evaluation each, starting from q_sample(x0, first step, noise) (or the noise itself for the whole grid)."""
    x0 = torch.linspace(-1, 1, 8, dtype=torch.float64).view(2, 1, 2, 2)
    for steps in (None, 1, 7, 10):
        g = grid(name, schedule, steps, spacing)
        for strength in (0.02, 0.1, 0.25, 0.5, 0.8, 0.99, 1.0):
            k = max(1, math.floor(strength * len(g) + 0.5))
            model, seen = Counting(MixtureOracle(schedule, -0.5, 0.4, 0.3)), []
            edit.img2img(model, schedule, x0, strength=strength, sampler=name, steps=steps, spacing=spacing,
                         generator=seeded_generators(2), callback=lambda i, t, x_t, x0_hat: seen.append((t, x_t)))
            assert model.calls == k and [t for t, _ in seen] == g[len(g) - k:], (steps, strength)
            noise = _noise(2, (1, 2, 2))
            start = noise if k == len(g) else schedule.q_sample(x0, torch.full((2,), g[len(g) - k]), noise)
            assert torch.equal(seen[0][1], start)


def test_small_strength_stays_close_to_the_input_by_the_closed_form():
    """Data N(0, 1) and DDIM (nearly the probability-flow ODE): the edit of a data point x0 from t is
    x0' = a·x0 + sigma·z exactly in the ODE limit, so E|x0' - x0|² = 2 (1 - sqrt(alpha_bar_t))."""
    s = Schedule.linear(50)
    x0 = torch.randn(20000, 1, 1, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    last = 0.0
    for strength in (0.1, 0.2, 0.4, 0.6):
        out = edit.img2img(GaussianOracle(s, 0.0, 1.0), s, x0, strength=strength, sampler="ddim", steps=50,
                           generator=torch.Generator().manual_seed(1))
        t = s.timesteps(50)[50 - edit.tail_length(strength, 50)]
        bound = 2 * (1 - math.sqrt(s.ab(t)))
        mse = ((out - x0) ** 2).mean().item()
        assert mse == pytest.approx(bound, rel=0.05) and mse <= 1.05 * bound and mse > last
        last = mse
        assert out.std().item() == pytest.approx(1.0, rel=0.02)  # still a sample of the data


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "euler"])
def test_img2img_of_an_oracle_sample_is_a_sample_of_the_same_distribution(name):
    s = Schedule.linear(200)
    oracle = MixtureOracle(s, -0.6, 0.5, 0.3)
    x_T = torch.randn(3000, 1, 2, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x0 = SAMPLERS["ddim"](oracle, s, x_T, steps=100)
    before = wasserstein_1(x0, oracle.cdf)
    for strength in (0.3, 0.7):
        out = edit.img2img(oracle, s, x0, strength=strength, sampler=name, steps=40,
                           generator=torch.Generator().manual_seed(3))
        assert wasserstein_1(out, oracle.cdf) < max(0.02, 2 * before)
        assert out.mean().item() == pytest.approx(x0.mean().item(), abs=0.03)
        assert out.std().item() == pytest.approx(x0.std().item(), rel=0.05)
        assert (out - x0).abs().mean() > 0.01  # it did move


@pytest.mark.parametrize("strength", [0, -0.1, 1.01, float("nan"), float("inf"), "0.5", True])
def test_bad_strength_is_named(strength, schedule):
    with pytest.raises(UsageError, match="strength"):
        edit.img2img(GaussianOracle(schedule, 0, 1), schedule, torch.zeros(1, 1, 2, 2), strength=strength)


def test_a_start_outside_the_grid_is_named(schedule):
    with pytest.raises(UsageError, match="start=5 is not allowed: expected a step index of the 5-step grid"):
        SAMPLERS["ddim"](GaussianOracle(schedule, 0, 1), schedule, torch.zeros(1, 1, 2, 2), steps=5, start=5)


def test_unknown_sampler_is_named(schedule):
    with pytest.raises(UsageError, match="sampler='heun'"):
        edit.img2img(GaussianOracle(schedule, 0, 1), schedule, torch.zeros(1, 1, 2, 2), strength=0.5, sampler="heun")


# ---------------------------------------------------------------------- inpainting
def test_repaint_walk_and_its_cost():
    assert edit.repaint_walk(3, 1, 2) == [2, 1, 2, 1, 0, 1, 0, -1]
    assert edit.repaint_walk(4, 10, 5) == [3, 2, 1, 0, -1]  # no room to jump: straight down
    for levels, j, r in [(10, 2, 3), (50, 10, 10), (20, 4, 5), (7, 3, 2), (5, 1, 1)]:
        walk = edit.repaint_walk(levels, j, r)
        assert walk[0] == levels - 1 and walk[-1] == -1
        assert all(abs(a - b) == 1 for a, b in zip(walk, walk[1:]))
        assert sum(b < a for a, b in zip(walk, walk[1:])) == edit.repaint_nfe(levels, j, r)
    assert edit.repaint_nfe(50, 10, 10) == 50 + 9 * 10 * 4


@pytest.mark.parametrize("resample, jump_length, strength", [(1, 10, 1.0), (3, 4, 1.0), (2, 3, 0.6)])
def test_inpainting_keeps_the_known_pixels_exactly(resample, jump_length, strength, schedule):
    x0 = torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    mask = torch.rand(6, 6, generator=torch.Generator().manual_seed(1)) > 0.5
    model = Counting(MixtureOracle(schedule, -0.6, 0.5, 0.3))
    out = edit.inpaint(model, schedule, x0, mask, steps=20, jump_length=jump_length, resample=resample,
                       strength=strength, generator=seeded_generators(3))
    assert torch.equal(out[:, :, mask], x0[:, :, mask])
    assert not torch.equal(out[:, :, ~mask], x0[:, :, ~mask])
    assert model.calls == edit.repaint_nfe(edit.tail_length(strength, 20), jump_length, resample)


def test_inpainting_matches_the_gaussian_conditional_and_resampling_gets_closer(schedule):
    """Correlated Gaussian data (rho = 0.9 between the 4 pixels): the generated pixels given the kept ones follow
    N(mu_u + S_uk S_kk^-1 (x_k - mu_k), S_uu - S_uk S_kk^-1 S_ku). Replacing the known part alone (resample 1)
    ignores that correlation; RePaint's resampling recovers it."""
    D, sd, rho = 4, 0.5, 0.9
    cov = sd**2 * ((1 - rho) * torch.eye(D, dtype=torch.float64) + rho * torch.ones(D, D, dtype=torch.float64))
    mu = torch.tensor([0.2, -0.1, 0.0, 0.3], dtype=torch.float64)
    k, u, x_k = [0, 1], [2, 3], torch.tensor([0.9, 0.8], dtype=torch.float64)
    S_kk, S_uk, S_uu = cov[k][:, k], cov[u][:, k], cov[u][:, u]
    mean = mu[u] + S_uk @ torch.linalg.solve(S_kk, x_k - mu[k])
    var = (S_uu - S_uk @ torch.linalg.solve(S_kk, S_uk.T)).diagonal()
    x0 = torch.zeros(4000, 1, 1, D, dtype=torch.float64)
    x0[..., k] = x_k
    mask = torch.tensor([1.0, 1, 0, 0]).view(1, 1, 1, D)
    errors = {}
    for resample in (1, 5):
        out = edit.inpaint(CorrelatedGaussianOracle(schedule, mu, cov), schedule, x0, mask, steps=20, jump_length=4,
                           resample=resample, generator=torch.Generator().manual_seed(0)).reshape(-1, D)[:, u]
        errors[resample] = ((out.mean(0) - mean).abs().max().item(), (out.var(0) / var - 1).abs().max().item())
    assert errors[5][0] < 0.06 and errors[5][1] < 0.5  # within tolerance of the closed form
    assert errors[5][0] < errors[1][0] / 3 and errors[5][1] < errors[1][1]  # and much closer than without


def test_inpainting_refuses_a_jump_with_no_room_and_bad_masks(schedule):
    model, x0 = GaussianOracle(schedule, 0, 1), torch.zeros(2, 1, 4, 4)
    with pytest.raises(UsageError, match="jump_length=10"):
        edit.inpaint(model, schedule, x0, torch.ones(4, 4), steps=10, jump_length=10, resample=3)
    with pytest.raises(UsageError, match="mask"):
        edit.inpaint(model, schedule, x0, torch.ones(3, 3), steps=10)
    with pytest.raises(UsageError, match="resample=0"):
        edit.inpaint(model, schedule, x0, torch.ones(4, 4), steps=10, resample=0)


# ---------------------------------------------------------------------- interpolation
def test_slerp_keeps_the_norm_and_the_ends():
    z_a, z_b = _noise(2, (3, 16, 16)).float()
    frames = edit.slerp(z_a, z_b, edit.frame_weights(9))
    assert torch.equal(frames[0], z_a) and torch.equal(frames[-1], z_b)
    norms = frames.flatten(1).norm(dim=1)
    assert torch.allclose(norms, norms[0], rtol=0.05)  # a Gaussian draw's norm all the way (|z_a| ≈ |z_b|)
    assert ((z_a + z_b) / 2).norm() < 0.8 * norms[4]  # where a straight line would shrink it
    assert torch.allclose(edit.slerp(z_a, z_a, [0.5])[0], z_a)  # one seed twice: the same noise


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "euler"])
def test_interpolation_ends_on_the_two_seeds_samples_bitwise(name, schedule):
    model = MixtureOracle(schedule, -0.6, 0.5, 0.3)
    z_a, z_b = _noise(2, (1, 4, 4), start=7)
    frames = SAMPLERS[name](model, schedule, edit.slerp(z_a, z_b, edit.frame_weights(5)), steps=8)  # as planned
    both = SAMPLERS[name](model, schedule, torch.stack([z_a, z_b]), steps=8)
    assert frames.shape == (5, 1, 4, 4) and torch.equal(frames[0], both[0]) and torch.equal(frames[-1], both[1])


def test_interpolation_refuses_stochastic_samplers(schedule):
    for sampler, options in (("ddpm", {}), ("ddim", {"eta": 0.5})):
        with pytest.raises(UsageError, match="deterministic sampler"):
            edit.check_deterministic(sampler, options)
    with pytest.raises(UsageError, match="frames=1"):
        edit.frame_weights(1)


# ---------------------------------------------------------------------- Pipeline methods
@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def test_pipeline_img2img_at_strength_one_is_pipeline_sample(pipe):
    x = torch.rand(3, 8, 8) * 2 - 1
    assert torch.equal(pipe.img2img(x, ["a", "c"], strength=1.0, n=3, seed=4), pipe.sample(["a", "c"], n=3, seed=4))


def test_pipeline_img2img_rows_pair_inputs_with_contexts_and_depend_on_the_seed_only(pipe):
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    both = pipe.img2img(x, ["a", "b"], strength=0.5, n=2, seed=10)
    second = pipe.img2img(x[1], "b", strength=0.5, n=2, seed=10)
    assert both.shape == (4, 3, 8, 8) and torch.allclose(both[2:], second, atol=1e-5)
    one = pipe.img2img(x[1], "b", strength=0.5, n=1, seed=11, batch_size=1)
    assert torch.allclose(both[3:], one, atol=1e-5)
    with pytest.raises(UsageError, match="2 rows for 3 input images"):
        pipe.img2img(torch.zeros(3, 3, 8, 8), ["a", "b"], strength=0.5)
    with pytest.raises(UsageError, match="images"):
        pipe.img2img(torch.zeros(3, 16, 16), "a", strength=0.5)
    with pytest.raises(UsageError, match="strength"):
        pipe.img2img(torch.zeros(3, 8, 8), "a", strength=0.0)


def test_pipeline_inpaint_keeps_pixels_and_refuses_bad_masks(pipe):
    x = torch.rand(3, 8, 8) * 2 - 1
    mask = torch.zeros(8, 8)
    mask[:, :4] = 1
    out = pipe.inpaint(x, mask, "b", n=2, steps=10, resample=2, jump_length=3)
    assert torch.equal(out[:, :, :, :4], x[:, :, :4].expand(2, -1, -1, -1))
    for bad, message in ((torch.ones(8, 8), "keeps every pixel"), (torch.zeros(8, 8), "generates every pixel"),
                         (torch.ones(4, 4), "mask")):
        with pytest.raises(UsageError, match=message):
            pipe.inpaint(x, bad, "b", steps=10)
    with pytest.raises(UsageError, match="sampler='dpmpp_2m'"):
        pipe.inpaint(x, mask, "b", steps=10, sampler="dpmpp_2m")
    with pytest.raises(UsageError, match="eta"):
        pipe.inpaint(x, mask, "b", steps=10, eta=0.5)


def test_pipeline_interpolate_ends_on_the_two_seeds(pipe):
    frames = pipe.interpolate(3, 8, frames=5, context="a")
    ends = pipe.sample("a", seeds=[3, 8])
    assert frames.shape == (5, 3, 8, 8)
    assert torch.allclose(frames[0], ends[0], atol=1e-5) and torch.allclose(frames[-1], ends[1], atol=1e-5)
    moved = pipe.interpolate(3, 3, frames=3, context="a", context_to="c")
    assert torch.allclose(moved[-1], pipe.sample("c", seed=3)[0], atol=1e-5)
    with pytest.raises(UsageError, match="deterministic"):
        pipe.interpolate(1, 2, sampler="ddpm")
