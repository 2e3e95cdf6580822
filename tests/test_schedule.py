import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinydiffusion.errors import UsageError
from tinydiffusion.core.schedule import Schedule
from tinydiffusion.vocab import SPACINGS


def test_linear_matches_ddpm_paper_betas():
    s = Schedule.linear(500, 1e-4, 0.02)
    assert s.T == 500 and s.alpha_bar.dtype == torch.float64
    assert torch.allclose(s.betas, torch.linspace(1e-4, 0.02, 500, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(s.alpha_bar, torch.cumprod(1 - torch.linspace(1e-4, 0.02, 500, dtype=torch.float64), 0))
    assert s.ab(-1) == 1.0 and s.ab(0) == pytest.approx(1 - 1e-4)


@pytest.mark.parametrize("factory", [Schedule.linear, Schedule.cosine])
def test_alpha_bar_strictly_decreasing_in_unit_interval(factory):
    ab = factory(200).alpha_bar
    assert (ab[1:] < ab[:-1]).all() and ab[0] < 1 and ab[-1] > 0


def test_cosine_closed_form():
    T, s = 100, 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    sched = Schedule.cosine(T, s)
    for t in (0, 10, 50, 98):
        assert float(sched.alpha_bar[t]) == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_q_sample_uses_square_roots_and_has_the_right_moments():
    s = Schedule.linear(500)
    x0 = torch.full((20000, 1, 2, 2), 0.7, dtype=torch.float64)
    t = torch.full((20000,), 250)
    x_t = s.q_sample(x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    ab = float(s.alpha_bar[250])
    assert x_t.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=0.01)
    assert x_t.var().item() == pytest.approx(1 - ab, rel=0.02)  # the course's (1-ab)·eps would give (1-ab)²


def test_q_sample_broadcasts_per_image_steps():
    s = Schedule.linear(10)
    x0, noise = torch.ones(3, 3, 4, 4), torch.zeros(3, 3, 4, 4)
    out = s.q_sample(x0, torch.tensor([0, 5, 9]), noise)
    for i, t in enumerate([0, 5, 9]):
        assert torch.allclose(out[i], torch.full((3, 4, 4), math.sqrt(float(s.alpha_bar[t]))))


def test_conversions_round_trip():
    s = Schedule.cosine(100)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.randint(0, 100, (8,), generator=g)
    x_t = s.q_sample(x0, t, eps)
    assert torch.allclose(s.eps_to_x0(x_t, t, eps), x0, atol=1e-10)
    assert torch.allclose(s.x0_to_eps(x_t, t, x0), eps, atol=1e-8)
    v = s.v_target(x0, t, eps)
    assert torch.allclose(s.v_to_x0(x_t, t, v), x0, atol=1e-12)
    assert torch.allclose(s.v_to_eps(x_t, t, v), eps, atol=1e-12)


def test_dict_round_trip():
    for s in (Schedule.linear(123, 2e-4, 0.03), Schedule.cosine(77), Schedule.linear(50).rescale_zero_terminal_snr()):
        assert torch.equal(Schedule.from_dict(s.to_dict()).alpha_bar, s.alpha_bar)


def test_zero_terminal_snr():
    s = Schedule.linear(500).rescale_zero_terminal_snr()
    assert float(s.alpha_bar[-1]) == 0.0
    assert float(s.alpha_bar[0]) == pytest.approx(float(Schedule.linear(500).alpha_bar[0]))


@pytest.mark.parametrize("bad", [0, -3, 501, 2.5, True])
def test_bad_step_counts_are_named(bad):
    with pytest.raises(UsageError, match=r"steps=.* expected an integer in 1\.\.500"):
        Schedule.linear(500).timesteps(bad)


def test_bad_spacing_and_T():
    with pytest.raises(UsageError, match="spacing"):
        Schedule.linear(10).timesteps(3, "sideways")
    with pytest.raises(UsageError, match="T=0"):
        Schedule.linear(0)


def test_trailing_starts_at_the_noisiest_step_and_full_grid_is_every_step():
    s = Schedule.linear(500)
    assert s.timesteps(1) == [499]
    assert s.timesteps(500) == list(range(499, -1, -1))
    assert s.timesteps(10)[:3] == [499, 449, 399]
    assert s.timesteps(10, "leading")[0] == 450  # the original DDIM grid never visits 499


@settings(max_examples=200, deadline=None)
@given(T=st.integers(1, 1000), data=st.data(), spacing=st.sampled_from(SPACINGS))
def test_grids_are_strictly_decreasing_of_the_requested_length(T, data, spacing):
    steps = data.draw(st.integers(1, T))
    grid = Schedule.linear(T).timesteps(steps, spacing)
    assert len(grid) == steps
    assert all(a > b for a, b in zip(grid, grid[1:]))
    assert 0 <= grid[-1] and grid[0] <= T - 1
    if spacing == "trailing":
        assert grid[0] == T - 1
    if spacing == "linspace" and steps > 1:
        assert grid[0] == T - 1 and grid[-1] == 0
