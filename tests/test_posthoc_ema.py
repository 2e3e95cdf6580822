"""Post-hoc EMA (training/posthoc_ema.py): the power-function EMA and its relative width, the reconstruction of
any length from snapshots against a directly computed average, and the training run that keeps the snapshots
(files, exact resume, export, errors)."""

import numpy as np
import pytest
import torch

from tinydiffusion.cli.main import main
from tinydiffusion.errors import UsageError
from tinydiffusion.sampling.pipeline import load
from tinydiffusion.store.checkpoint import read_weights
import tinydiffusion.training.train as train_module
from tinydiffusion.training import posthoc_ema as P
from tinydiffusion.training.train import TrainConfig, train


def _power_ema(theta: np.ndarray, g: float) -> np.ndarray:
    """The power-function EMA of the trajectory ``theta`` [T] after every step, by its definition."""
    out, e = np.empty_like(theta), 0.0
    for t in range(1, len(theta) + 1):
        beta = (1 - 1 / t) ** (g + 1)
        e = beta * e + (1 - beta) * theta[t - 1]
        out[t - 1] = e
    return out


def test_gamma_and_sigma_rel_are_inverse_and_match_edm2s_profiles():
    assert P.gamma(0.05) == pytest.approx(16.97, abs=0.01)  # EDM2's two tracked profiles
    assert P.gamma(0.10) == pytest.approx(6.94, abs=0.01)
    for s in (0.01, 0.05, 0.1, 0.2, P.MAX_SIGMA_REL):
        assert P.sigma_rel(P.gamma(s)) == pytest.approx(s, rel=1e-9)
    assert P.sigma_rel(0.0) == pytest.approx(12**-0.5)  # γ = 0: the plain average of the whole run


def test_profiles_integrate_to_one_and_their_dot_product_is_the_closed_form():
    tau = np.linspace(0, 1, 200_001)
    for (ta, ga), (tb, gb) in [((1.0, 6.9), (0.7, 17.0)), ((0.4, 2.0), (0.9, 0.5))]:
        pa = np.where(tau <= ta, (ga + 1) * tau**ga / ta ** (ga + 1), 0)
        pb = np.where(tau <= tb, (gb + 1) * tau**gb / tb ** (gb + 1), 0)
        assert np.trapezoid(pa, tau) == pytest.approx(1, abs=1e-3)
        assert P.profile_dot(ta, ga, tb, gb) == pytest.approx(np.trapezoid(pa * pb, tau), rel=2e-3)


def test_a_tracked_profile_is_reconstructed_by_its_own_last_snapshot():
    times = [100, 100, 200, 200, 300, 300]
    gammas = [P.gamma(s) for s in P.SIGMA_RELS] * 3
    x, residual = P.coefficients(times, gammas, 300, P.gamma(0.10))
    assert residual < 1e-6
    assert np.allclose(x, [0, 0, 0, 0, 0, 1], atol=1e-6)


@pytest.mark.parametrize("target", [0.03, 0.07, 0.15, 0.2])
def test_any_length_is_reconstructed_from_two_profiles_to_the_directly_averaged_weights(target):
    rng = np.random.default_rng(0)
    T, every = 3000, 100
    theta = np.cumsum(rng.normal(size=T)) * 0.1 + np.sin(np.arange(1, T + 1) / 200)  # a drifting "weight"
    tracked = [(P.gamma(s), _power_ema(theta, P.gamma(s))) for s in P.SIGMA_RELS]
    times = [t for t in range(every, T + 1, every) for _ in tracked]
    gammas = [g for _ in range(every, T + 1, every) for g, _ in tracked]
    values = np.array([ema[t - 1] for t in range(every, T + 1, every) for _, ema in tracked])
    x, residual = P.coefficients(times, gammas, T, P.gamma(target))
    direct = _power_ema(theta, P.gamma(target))[-1]
    assert abs(x @ values - direct) < 1e-3 * theta.std()
    assert residual < 0.02
    # a different length is a different average: the check could fail
    assert abs(_power_ema(theta, P.gamma(0.1))[-1] - direct) > 1e-2 * theta.std()


def test_power_emas_follow_their_definition_on_a_network():
    net = torch.nn.Linear(2, 1)
    emas = P.PowerEMAs(net)
    trajectory = []
    for t in range(1, 31):
        with torch.no_grad():
            net.weight.fill_(float(np.sin(t / 5)))
        trajectory.append(float(np.sin(t / 5)))
        emas.update(net, t)
    for g, params in zip(emas.gammas, emas.params):
        assert float(params[0][0, 0]) == pytest.approx(_power_ema(np.array(trajectory), g)[-1], abs=1e-6)


def _config(data, out, **kw):
    base = dict(data=str(data), out=str(out), model="tiny", image_size=8, T=50, batch_size=16, log_every=5,
                progress=False, device="cpu", lr=3e-3, warmup=5, sample_every=1000, ema_snapshot_every=10)
    return TrainConfig(**{**base, **kw})


def test_training_keeps_snapshots_resumes_them_exactly_and_exports_any_length(shapes_npz, tmp_path, monkeypatch):
    train(_config(shapes_npz, tmp_path / "full", steps=25))
    files = sorted(p.name for p in (tmp_path / "full" / "ema").iterdir())
    assert files == ["step_0000010.safetensors", "step_0000020.safetensors", "step_0000025.safetensors"]

    calls, real_loss = [0], train_module.diffusion_loss

    def interrupted_on_step_13(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 13:
            raise KeyboardInterrupt  # Ctrl-C between two snapshots
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "diffusion_loss", interrupted_on_step_13)
    assert train(_config(shapes_npz, tmp_path / "split", steps=25)).interrupted
    monkeypatch.setattr(train_module, "diffusion_loss", real_loss)
    train(_config(shapes_npz, tmp_path / "split", steps=25), resume=True)
    assert sorted(p.name for p in (tmp_path / "split" / "ema").iterdir()) == files
    for name in ("step_0000020.safetensors", "step_0000025.safetensors"):
        a, b = (read_weights(tmp_path / run / "ema" / name) for run in ("full", "split"))
        assert all(torch.equal(a[k], b[k]) for k in a), name

    out, record = P.export_length(tmp_path / "full", 0.10)
    assert out == tmp_path / "full" / "model-ema-0.1" and record["step"] == 25 and record["residual"] < 1e-6
    snapshot = read_weights(tmp_path / "full" / "ema" / "step_0000025.safetensors")
    pipe = load(out)
    for name, value in pipe.model.state_dict().items():  # the tracked 0.10 profile itself
        assert torch.allclose(value, snapshot[f"1/{name}"], atol=1e-5), name
    assert pipe.config["training"]["ema"]["sigma_rel"] == 0.1
    assert pipe.sample(n=2, steps=3).shape == (2, 3, 8, 8)
    other = load(P.export_length(tmp_path / "full", 0.2)[0]).model.state_dict()
    assert any(not torch.allclose(other[k], v) for k, v in pipe.model.state_dict().items())


def test_the_ema_command_exports_lengths_and_refuses_what_it_cannot_do(shapes_npz, tmp_path, capsys):
    train(_config(shapes_npz, tmp_path / "run", steps=20))
    assert main(["ema", str(tmp_path / "run"), "--sigma-rel", "0.05,0.15"]) == 0
    printed = capsys.readouterr().out
    assert "sigma_rel 0.05:" in printed and "sigma_rel 0.15:" in printed and "residual" in printed
    assert (tmp_path / "run" / "model-ema-0.15" / "model.safetensors").is_file()
    assert main(["ema", str(tmp_path / "run"), "--sigma-rel", "0.05"]) == 2  # written before: not overwritten
    assert "--overwrite" in capsys.readouterr().err
    assert main(["ema", str(tmp_path / "run"), "--sigma-rel", "0.05", "--overwrite"]) == 0
    assert main(["ema", str(tmp_path / "run"), "--sigma-rel", "0.4"]) == 2
    assert "sigma_rel=0.4" in capsys.readouterr().err
    assert main(["ema", str(tmp_path / "run"), "--sigma-rel", "0.05,0.1", "--out", str(tmp_path / "x")]) == 2

    train(_config(shapes_npz, tmp_path / "plain", steps=5, ema_snapshot_every=0))
    for run in (tmp_path / "plain", tmp_path / "nowhere"):
        with pytest.raises(UsageError, match="run=.*--ema-snapshot-every"):
            P.export_length(run, 0.1)
    (tmp_path / "plain" / "ema").mkdir()  # a folder without snapshots
    with pytest.raises(UsageError, match="no post-hoc EMA snapshots"):
        P.export_length(tmp_path / "plain", 0.1)
    with pytest.raises(UsageError, match="ema_snapshot_every"):
        TrainConfig(ema_snapshot_every=-1)
