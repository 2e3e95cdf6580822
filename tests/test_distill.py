"""Distillation objectives against closed forms, and ``distill`` end to end on a tiny teacher."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import GaussianOracle, PointMassOracle, train_tiny
from tinydiffusion.cli.main import main
from tinydiffusion.training.distill import DistillConfig, distill
from tinydiffusion.core.distill_loss import (alpha_sigma, clean_prediction, consistency_loss, ddim_step, progressive_loss,
                                        progressive_pairs, step_target)
from tinydiffusion.errors import UsageError
from tinydiffusion.sampling.pipeline import load
from tinydiffusion.core.samplers import ddim
from tinydiffusion.core.schedule import Schedule


def _x(n=6, seed=0):
    return torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))


class _Module(torch.nn.Module):
    """A network-shaped wrapper around a function of ``(x_t, t, context)``."""

    def __init__(self, fn, prediction="eps"):
        super().__init__()
        self.fn, self.prediction = fn, prediction

    def forward(self, x, t, context=None):
        return self.fn(x, t, context)


def _as_eps(schedule, x, t, x0):
    a, s = alpha_sigma(schedule, t, x)
    return (x - a * x0) / s


def test_step_target_lands_on_the_teachers_two_steps():
    """One DDIM step through x0~ ends exactly where two teacher steps end (Salimans & Ho, eq. 8), on every pair
    of the grid, the last one (to the clean state) included."""
    schedule = Schedule.linear(40)
    teacher = _Module(GaussianOracle(schedule, mu=0.3, s=0.7))
    for t, mid, end in zip(*progressive_pairs(schedule, 4)):
        x_t = _x()
        tt, tm, te = (torch.full((6,), v) for v in (t, mid, end))
        z_end = ddim_step(teacher, schedule, ddim_step(teacher, schedule, x_t, tt, tm, None), tm, te, None)
        x0 = step_target(schedule, x_t, tt, z_end, te)
        a_end, s_end = alpha_sigma(schedule, te, x_t)
        one_step = a_end * x0 + s_end * _as_eps(schedule, x_t, tt, x0)
        assert torch.allclose(one_step, z_end, atol=1e-5), (t, mid, end)
        if end == -1:
            assert torch.equal(x0, z_end)  # the last step lands on the teacher's own clean image


def test_progressive_pairs_are_every_other_teacher_step():
    schedule = Schedule.linear(500)
    starts, mids, ends = progressive_pairs(schedule, 4)
    assert starts == [499, 374, 249, 124] and ends == [374, 249, 124, -1]
    assert mids == [437, 312, 187, 62]
    for T in (7, 10, 50, 999):  # trailing grids nest for every T: the check in progressive_pairs is a safeguard
        for k in (1, 2, 3):
            starts, mids, ends = progressive_pairs(Schedule.linear(T), k)
            assert all(s > m > e for s, m, e in zip(starts, mids, ends))


def test_progressive_loss_is_zero_for_the_oracle_student():
    """A student whose output is the two-teacher-step target has zero loss: the loss pairs each image's step with
    its teacher midpoint and end correctly (a wrong pairing gives a large loss)."""
    schedule = Schedule.linear(40)
    teacher = _Module(GaussianOracle(schedule, mu=-0.2, s=0.5))
    starts, mids, ends = (dict(zip(progressive_pairs(schedule, 4)[0], v)) for v in progressive_pairs(schedule, 4))

    def oracle(x, t, context):
        tm = torch.tensor([mids[int(v)] for v in t])
        te = torch.tensor([ends[int(v)] for v in t])
        z = ddim_step(teacher, schedule, ddim_step(teacher, schedule, x, t, tm, None), tm, te, None)
        return _as_eps(schedule, x, t, step_target(schedule, x, t, z, te))

    x0 = _x(32)
    g = torch.Generator().manual_seed(1)
    loss = progressive_loss(_Module(oracle), teacher, schedule, x0, None, steps=4, prediction="eps", generator=g)
    assert loss.item() < 1e-8
    g = torch.Generator().manual_seed(1)
    assert progressive_loss(teacher, teacher, schedule, x0, None, steps=4, prediction="eps", generator=g) > 1e-4


def _ddim_chain(teacher, schedule, grid):
    """The consistency function of a teacher's DDIM discretisation: from ``x`` at grid time ``t``, the teacher's
    clean image after walking the rest of the grid."""
    nxt = dict(zip(grid, grid[1:] + [-1]))

    def f(x, t, context):
        out = []
        for xi, ti in zip(x, t.tolist()):
            xi, ti = xi[None], torch.tensor([ti])
            while ti.item() >= 0:
                xi, ti = ddim_step(teacher, schedule, xi, ti, torch.tensor([nxt[ti.item()]]), None), \
                    torch.tensor([nxt[ti.item()]])
            out.append(xi[0])
        x0 = torch.stack(out)
        return _as_eps(schedule, x, t, x0)
    return f


def test_consistency_loss_is_zero_for_the_teachers_consistency_function():
    schedule = Schedule.linear(40)
    teacher = _Module(GaussianOracle(schedule, mu=0.1, s=0.6))
    grid = schedule.timesteps(8)
    student = _Module(_ddim_chain(teacher, schedule, grid))
    x0 = _x(24)
    loss = consistency_loss(student, teacher, schedule, x0, None, steps=8, prediction="eps",
                            generator=torch.Generator().manual_seed(2))
    assert loss.item() < 1e-9
    loss = consistency_loss(teacher, teacher, schedule, x0, None, steps=8, prediction="eps",
                            generator=torch.Generator().manual_seed(2))
    assert loss.item() > 1e-4  # the teacher's own one-step clean image is not the end of its trajectory


def test_one_step_consistency_map_of_a_gaussian_is_the_exact_ode_map():
    """For data N(mu, s²) the probability-flow ODE keeps xi = (x_t - a mu) / sqrt(a² s² + sigma²) constant, so the
    exact one-step map from x_T is mu + s·xi. The consistency function of a fine DDIM grid (what the consistency
    loss trains toward) reproduces it; one-step DDIM of the teacher does not."""
    schedule = Schedule.linear(200)
    mu, s = 0.4, 0.5
    teacher = _Module(GaussianOracle(schedule, mu, s))
    T = schedule.T - 1
    x_T = _x(8)
    a, sig = alpha_sigma(schedule, torch.tensor([T]), x_T)
    exact = mu + s * (x_T - a * mu) / (a**2 * s**2 + sig**2).sqrt()
    t = torch.full((8,), T)
    errors = []
    for n in (25, 50, 200):  # DDIM is first order: the chain converges to the exact map as the grid refines
        f = _ddim_chain(teacher, schedule, schedule.timesteps(n))
        errors.append((clean_prediction(_Module(f), schedule, x_T, t, None)[0] - exact).abs().max().item())
    assert errors[2] < 0.02 and errors[2] < errors[1] / 3 and errors[1] < errors[0] / 1.8, errors
    one_step = ddim(teacher, schedule, x_T, steps=1)
    assert (one_step - exact).abs().max() > 0.1


def test_point_mass_progressive_target_is_the_point():
    """With a single data point every teacher step is exact, so the target is the point from any step."""
    schedule = Schedule.linear(40)
    x_star = _x(1, seed=5)[0]
    teacher = _Module(PointMassOracle(schedule, x_star))
    x_t = _x()
    for t, mid, end in zip(*progressive_pairs(schedule, 2)):
        tt, tm, te = (torch.full((6,), v) for v in (t, mid, end))
        z = ddim_step(teacher, schedule, ddim_step(teacher, schedule, x_t, tt, tm, None), tm, te, None)
        assert torch.allclose(step_target(schedule, x_t, tt, z, te), x_star.expand_as(x_t), atol=1e-4)


# ---------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("teacher"), 4, "--checkpoint-every", "100") / "model"


def _config(teacher, out, **kw):
    base = dict(teacher=str(teacher), out=str(out), method="progressive", steps=1, teacher_steps=4, iterations=3,
                batch_size=8, sample_every=1000, checkpoint_every=1000, progress=False)
    return DistillConfig(**{**base, **kw})


def test_distill_progressive_exports_every_stage(teacher, tmp_path):
    r = distill(_config(teacher, tmp_path / "d"))
    assert [s["steps"] for s in r.stages] == [2, 1]
    for k in (2, 1):
        card = json.loads((tmp_path / "d" / "stages" / str(k) / "model" / "config.json").read_text())
        assert card["distilled"]["steps"] == [k] and card["distilled"]["sampler"] == "ddim"
        assert card["recommended"] == {"sampler": "ddim", "steps": k, "guidance": card["distilled"]["guidance"]}
    student = load(r.model_dir)
    assert student.distilled["steps"] == [1]
    x = student.sample(["square"], n=2)
    assert x.shape == (2, 3, 8, 8) and torch.isfinite(x).all()
    assert (tmp_path / "d" / "stages" / "1" / "samples" / "final.png").is_file()
    record = json.loads((tmp_path / "d" / "distill.json").read_text())
    assert [s["steps"] for s in record["stages"]] == [2, 1] and all(s["seconds"] > 0 for s in record["stages"])


def test_distill_resume_is_exact(teacher, tmp_path, monkeypatch):
    """A distillation that fails in its first stage and is resumed gives the same student, bit for bit."""
    whole = distill(_config(teacher, tmp_path / "whole", iterations=4))
    monkeypatch.setenv("TINYDIFFUSION_TEST_FAULT", "0:2:raise")
    with pytest.raises(RuntimeError, match="fails at step 2"):
        distill(_config(teacher, tmp_path / "cut", iterations=4))
    monkeypatch.delenv("TINYDIFFUSION_TEST_FAULT")
    resumed = distill(_config(teacher, tmp_path / "cut", iterations=4), resume=True)
    assert (whole.model_dir / "model.safetensors").read_bytes() == (resumed.model_dir / "model.safetensors").read_bytes()


def test_consistency_student_samples_at_every_nested_step_count(teacher, tmp_path):
    r = distill(_config(teacher, tmp_path / "c", method="consistency", steps=2, teacher_steps=4, iterations=2))
    student = load(r.model_dir)
    assert student.distilled["steps"] == [1, 2, 4] and student.recommended["sampler"] == "consistency"
    a = student.sample(["hbar"], n=2, steps=1)
    b = student.sample(["hbar"], n=2, steps=4)
    assert a.shape == b.shape == (2, 3, 8, 8) and not torch.equal(a, b)


def test_student_refuses_what_it_was_not_distilled_for(teacher, tmp_path, capsys):
    r = distill(_config(teacher, tmp_path / "d", steps=2, iterations=1))
    student = load(r.model_dir)
    for kwargs, named in (({"sampler": "ddpm"}, "sampler='ddpm'"), ({"steps": 3}, "steps=3"),
                          ({"guidance": 7.0}, "guidance=7"), ({"guidance_rescale": 0.5}, "guidance_rescale=0.5")):
        with pytest.raises(UsageError, match=named):
            student.sample(["square"], **kwargs)
    for argv, named in ((["--sampler", "dpmpp_2m"], "sampler='dpmpp_2m'"), (["--steps", "4"], "steps=4"),
                        (["--guidance", "1"], "guidance=1")):
        capsys.readouterr()
        assert main(["sample", str(r.model_dir), "--out", str(tmp_path / "x.png"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err and "distilled" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()
    assert main(["sample", str(r.model_dir), "--out", str(tmp_path / "ok.png")]) == 0


def test_distill_cli_refuses_bad_settings_and_busy_folders(teacher, tmp_path, capsys):
    cases = [(["--iterations", "1", "--steps", "3", "--teacher-steps", "8"], "teacher_steps=8"),
             (["--iterations", "1", "--method", "consistency", "--steps", "3", "--teacher-steps", "4"], "steps=3"),
             (["--steps", "2"], "budget"),
             (["--iterations", "0"], "iterations=0"),
             (["--iterations", "1", "--teacher-steps", "64"], "steps"),
             (["--iterations", "1", "--guidance", "-1"], "guidance=-1")]
    for argv, named in cases:
        capsys.readouterr()
        assert main(["distill", str(teacher), "--out", str(tmp_path / "bad"), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err, (argv, err)
        assert not (tmp_path / "bad").exists()
    out = tmp_path / "d"
    assert main(["distill", str(teacher), "--out", str(out), "--steps", "2", "--teacher-steps", "4",
                 "--iterations", "1", "--no-progress"]) == 0
    assert main(["distill", str(teacher), "--out", str(out), "--steps", "2", "--teacher-steps", "4",
                 "--iterations", "1", "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["distill", str(out / "model"), "--out", str(tmp_path / "e"), "--iterations", "1"]) == 2
    assert "already a distilled student" in capsys.readouterr().err
