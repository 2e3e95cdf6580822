import csv

import pytest
import torch

import tinydiffusion.training.train as train_module
from tinydiffusion.store.checkpoint import load_state
from tinydiffusion.errors import UsageError
from tinydiffusion.sampling.pipeline import load
from tinydiffusion.training.train import TrainConfig, train


def _config(data, out, **kw):
    base = dict(data=str(data), out=str(out), model="tiny", image_size=8, T=50, batch_size=16, log_every=1,
                progress=False, device="cpu", lr=3e-3, warmup=5)
    return TrainConfig(**{**base, **kw})


def _losses(out):
    with open(out / "metrics.csv") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def test_tiny_model_loss_falls_on_a_tiny_data_set(shapes_npz, tmp_path):
    result = train(_config(shapes_npz, tmp_path / "run", steps=60, log_every=10))
    losses = _losses(tmp_path / "run")
    assert result.step == 60 and sorted(losses) == [10, 20, 30, 40, 50, 60]
    assert losses[60] < 0.75 * losses[10]  # 0.53–0.64 over seeds 0–4
    for name in ("config.json", "metrics.csv", "state.pt", "model/config.json", "model/model.safetensors",
                 "samples/final.png"):
        assert (tmp_path / "run" / name).exists(), name


def test_resume_continues_the_step_count_and_reproduces_the_next_losses(shapes_npz, tmp_path, monkeypatch):
    full = train(_config(shapes_npz, tmp_path / "full", steps=8))
    calls, real_loss = [0], train_module.diffusion_loss

    def interrupted_on_the_fifth_step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during step 5
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "diffusion_loss", interrupted_on_the_fifth_step)
    first = train(_config(shapes_npz, tmp_path / "split", steps=8))
    assert first.interrupted and first.step == 4
    assert load_state(tmp_path / "split" / "state.pt")["step"] == 4
    assert (tmp_path / "split" / "model" / "model.safetensors").exists()  # nothing is lost on Ctrl-C
    monkeypatch.setattr(train_module, "diffusion_loss", real_loss)
    second = train(_config(shapes_npz, tmp_path / "split", steps=8), resume=True)
    assert second.step == 8 and not second.interrupted
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "split")
    assert sorted(b) == list(range(1, 9))
    for step in range(1, 9):
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7), step
    ema_a, ema_b = load(tmp_path / "full" / "model").model, load(tmp_path / "split" / "model").model
    for (name, p), q in zip(ema_a.state_dict().items(), ema_b.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), name
    assert full.step == 8


def test_resume_without_a_state_is_a_clear_error(tmp_path, shapes_npz):
    with pytest.raises(UsageError, match="nothing to resume"):
        train(_config(shapes_npz, tmp_path / "empty", steps=2), resume=True)


def test_epoch_budget_and_unconditional_training(shapes_npz, tmp_path):
    result = train(_config(shapes_npz, tmp_path / "u", epochs=2, context="none", balance=False))
    assert result.step == 6  # 48 images / 16 per step = 3 steps per epoch
    pipe = load(tmp_path / "u" / "model")
    assert pipe.context.kind == "none" and pipe.sample(None, n=2, steps=3, sampler="ddim").shape == (2, 3, 8, 8)


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"p_uncond": 1.0}, {"steps": -1}, {"prediction": "noise"},
                                 {"ema_decay": 1.0}, {"lr": 0}])
def test_bad_training_settings_are_named(bad):
    with pytest.raises(UsageError, match=next(iter(bad))):
        TrainConfig(**bad)


def test_bad_image_size_for_the_model_is_named(shapes_npz, tmp_path):
    with pytest.raises(UsageError, match="image_size=12 .* multiple of 8"):
        train(_config(shapes_npz, tmp_path / "x", steps=1, model="base", image_size=12))


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_a_v_or_x0_trained_model_samples_with_every_sampler(shapes_npz, tmp_path, prediction):
    from tinydiffusion.core.samplers import SAMPLERS

    train(_config(shapes_npz, tmp_path / prediction, steps=3, prediction=prediction, zero_terminal_snr=True,
                  snr_gamma=5.0))
    pipe = load(tmp_path / prediction / "model")
    assert pipe.prediction == prediction and pipe.schedule.to_dict()["zero_terminal_snr"]
    for name in SAMPLERS:
        images = pipe.sample(["square", "vbar"], n=2, sampler=name, steps=4, guidance=2.0)
        assert images.shape == (4, 3, 8, 8) and torch.isfinite(images).all(), name
    with pytest.raises(UsageError, match="trained to predict"):
        load(tmp_path / prediction / "model", prediction="eps")


def test_zero_terminal_snr_with_eps_is_refused_at_training_time():
    with pytest.raises(UsageError, match="prediction='eps'.*zero-terminal-snr"):
        TrainConfig(prediction="eps", zero_terminal_snr=True)


@pytest.mark.slow
def test_torchrun_two_processes_train_data_parallel(shapes_npz, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "tinydiffusion", "train",
           "--data", str(shapes_npz), "--out", str(out), "--steps", "3", "--log-every", "1", "--device", "cpu",
           "--model", "tiny", "--image-size", "8", "--T", "50", "--batch-size", "8", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("trained 3 steps") == 1  # one report, from rank 0
    assert sorted(_losses(out)) == [1, 2, 3] and (out / "model" / "model.safetensors").exists()


def test_bf16_loss_curve_stays_within_tolerance_of_fp32(shapes_npz, tmp_path):
    """The same seeded run in fp32 and under bf16 autocast: the loss, averaged over windows of 5 steps,
    stays within 10 % of fp32's (bf16 keeps 8 bits of mantissa; the optimizer and EMA stay fp32)."""
    curves = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        train(TrainConfig(data=str(shapes_npz), out=str(out), model="tiny", image_size=8, T=50, batch_size=16,
                          steps=20, log_every=1, sample_every=10**6, checkpoint_every=10**6, precision=precision,
                          progress=False))
        with open(out / "metrics.csv") as f:
            losses = torch.tensor([float(r["loss"]) for r in csv.DictReader(f)])
        curves[precision] = losses.reshape(-1, 5).mean(1)
    assert len(curves["fp32"]) == 4
    assert torch.allclose(curves["bf16"], curves["fp32"], rtol=0.1, atol=0)
    assert not torch.equal(curves["bf16"], curves["fp32"])  # bf16 really ran
