"""What survives what: kills, Ctrl-C, non-finite steps, a full disk, a second trainer, an old run."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tinydiffusion.training.state as state_module
import tinydiffusion.training.train as train_module
from tinydiffusion.store.checkpoint import load_state
from tinydiffusion.cli.main import main
from tinydiffusion.errors import UsageError
from tinydiffusion.training.train import TrainConfig, TrainingDiverged, train

from corpus import snapshot

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _config(data, out, **kw):
    base = dict(data=str(data), out=str(out), model="tiny", image_size=8, T=50, batch_size=16, log_every=1,
                progress=False, device="cpu", lr=3e-3, warmup=5)
    return TrainConfig(**{**base, **kw})


def _rows(out):
    with open(Path(out) / "metrics.csv") as f:
        return [(int(r["step"]), r["loss"], r["lr"]) for r in csv.DictReader(f)]


def _same_run(a: Path, b: Path) -> None:
    """Bitwise: the exported EMA weights, the training state's tensors and the metrics rows."""
    assert (a / "model" / "model.safetensors").read_bytes() == (b / "model" / "model.safetensors").read_bytes()
    sa, sb = load_state(a / "state.pt"), load_state(b / "state.pt")
    assert sa["step"] == sb["step"]
    for key in ("model", "ema"):
        for name, tensor in sa[key].items():
            assert torch.equal(tensor, sb[key][name]), (key, name)
    assert _rows(a) == _rows(b)


# ---------------------------------------------------------------------- Ctrl-C and kills
def test_ctrl_c_inside_the_optimizer_update_still_resumes_bitwise(shapes_npz, tmp_path, monkeypatch):
    """The reported bug: a Ctrl-C between the update and the bookkeeping saved weights a step ahead."""
    train(_config(shapes_npz, tmp_path / "full", steps=12))
    real, calls = train_module._ema_update, [0]

    def signal_mid_update(*args):
        calls[0] += 1
        if calls[0] == 5:
            os.kill(os.getpid(), signal.SIGINT)  # lands after optimizer.step, before the step is recorded
        return real(*args)

    monkeypatch.setattr(train_module, "_ema_update", signal_mid_update)
    first = train(_config(shapes_npz, tmp_path / "split", steps=12))
    assert first.interrupted and first.step == 5 and load_state(tmp_path / "split" / "state.pt")["step"] == 5
    monkeypatch.setattr(train_module, "_ema_update", real)
    assert train(_config(shapes_npz, tmp_path / "split", steps=12), resume=True).step == 12
    _same_run(tmp_path / "full", tmp_path / "split")


def _cli_train(data, out, *extra):
    return [sys.executable, "-m", "tinydiffusion", "train", "--data", str(data), "--out", str(out), "--model", "tiny",
            "--image-size", "8", "--T", "50", "--batch-size", "16", "--no-progress", "--log-every", "1",
            "--checkpoint-every", "7", "--sample-every", "100000", "--lr", "3e-3", "--warmup", "5", "--steps", "160",
            "--device", "cpu", *extra]


def _wait_until_training(proc, out: Path, state_step: int) -> None:
    """Until this process makes steps: it owns the lock, and metrics.csv has been seen trimmed to the state's
    step (rows a killed run wrote after its last checkpoint are dropped on resume) and then grew past it.
    A signal earlier would land in Python's start-up, before there is anything to stop cleanly."""
    deadline, trimmed = time.time() + 60, False
    while time.time() < deadline and proc.poll() is None:
        try:
            owner = json.loads((out / ".lock").read_text()).get("pid")
            rows = (out / "metrics.csv").read_text().splitlines()[1:]
            top = max([int(r.split(",")[0]) for r in rows if r.split(",")[0].isdigit()], default=0)
        except (OSError, ValueError):
            owner, top = None, None
        if owner == proc.pid and top is not None:
            if top <= state_step:
                trimmed = True
            elif trimmed:
                return
        time.sleep(0.005)


def _kill_and_resume(data, out: Path, sig: int, trials: int, rng: random.Random) -> list[int]:
    """Start, kill with ``sig`` at a random moment once training runs, resume; ``trials`` times; then finish."""
    steps_at_kill = []
    for trial in range(trials):
        state_step = load_state(out / "state.pt")["step"] if (out / "state.pt").exists() else 0
        proc = subprocess.Popen(_cli_train(data, out, "--resume", "auto"), env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        _wait_until_training(proc, out, state_step)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        expected = (-signal.SIGKILL,) if sig == signal.SIGKILL else (130, 0)
        assert proc.returncode in expected, err.decode()[-2000:]
        steps_at_kill.append(len((out / "metrics.csv").read_text().splitlines()) - 1)
    done = subprocess.run(_cli_train(data, out, "--resume", "auto"), env=ENV, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return steps_at_kill


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_or_interrupted_three_times_then_resumed_equals_the_uninterrupted_run(shapes_npz, tmp_path, sig):
    full = subprocess.run(_cli_train(shapes_npz, tmp_path / "full"), env=ENV, capture_output=True, timeout=120)
    assert full.returncode == 0, full.stderr.decode()[-2000:]
    seed = random.randrange(10**6)
    at = _kill_and_resume(shapes_npz, tmp_path / "split", sig, 3, random.Random(seed))
    _same_run(tmp_path / "full", tmp_path / "split")
    assert not list((tmp_path / "split").glob(".*.tmp")), f"temp files left (seed {seed}, kills at {at})"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_twenty_kills_then_resumed_equals_the_uninterrupted_run(shapes_npz, tmp_path, sig):
    full = subprocess.run(_cli_train(shapes_npz, tmp_path / "full"), env=ENV, capture_output=True, timeout=120)
    assert full.returncode == 0
    for k in range(20):
        out = tmp_path / f"split{k}"
        _kill_and_resume(shapes_npz, out, sig, 1, random.Random(k))
        _same_run(tmp_path / "full", out)


# ---------------------------------------------------------------------- non-finite steps
def test_non_finite_steps_are_skipped_counted_and_a_diverged_run_keeps_its_last_good_state(shapes_npz, tmp_path,
                                                                                            monkeypatch):
    real, calls = train_module.diffusion_loss, [0]

    def poisoned(*args, **kwargs):
        calls[0] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls[0] in (3, 4) or calls[0] >= 9 else loss

    monkeypatch.setattr(train_module, "diffusion_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="3 consecutive steps"):
        train(_config(shapes_npz, tmp_path / "run", steps=20, checkpoint_every=4, nonfinite_limit=3))
    state = load_state(tmp_path / "run" / "state.pt")
    assert state["step"] == 11 and state["nonfinite_total"] == 5  # steps 3, 4 and 9–11 skipped
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not (tmp_path / "run" / "model").exists()  # nothing poisoned is exported
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [int(r["nonfinite_steps"]) for r in rows][:5] == [0, 0, 1, 2, 2]


def test_a_diverged_run_from_the_cli_is_one_clear_line(shapes_npz, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_module, "diffusion_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    code = main(["train", "--data", str(shapes_npz), "--out", str(tmp_path / "r"), "--model", "tiny", "--image-size",
                 "8", "--T", "50", "--steps", "30", "--no-progress", "--nonfinite-limit", "4"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "4 consecutive steps" in err and "no model was exported" in err


# ---------------------------------------------------------------------- a full disk
@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                                           capture_output=True).returncode:
        pytest.skip("needs root to mount a small tmpfs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _train_then_break_the_disk(shapes_npz, out: Path, monkeypatch, capsys, break_disk) -> str:
    """Train 12 steps with a checkpoint every 4; ``break_disk()`` runs right after the first state is written.
    Returns the CLI's stderr, after checking it is one refusal (exit 2, no traceback) keeping step 4."""
    real, saves = state_module.save_state, [0]

    def save_then_break(path, state, kept=None):
        result = real(path, state, kept=kept)
        saves[0] += 1
        if saves[0] == 1:
            break_disk()
        return result

    monkeypatch.setattr(state_module, "save_state", save_then_break)
    code = main(["train", "--data", str(shapes_npz), "--out", str(out), "--model", "tiny", "--image-size", "8", "--T",
                 "50", "--steps", "12", "--checkpoint-every", "4", "--sample-every", "1000", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert "the previous state at step 4 is intact" in err
    assert load_state(out / "state.pt")["step"] == 4
    monkeypatch.setattr(state_module, "save_state", real)
    return err


def test_disk_full_at_a_later_checkpoint_is_one_line_and_keeps_the_previous_state(shapes_npz, tiny_disk, monkeypatch,
                                                                                  capsys):
    def fill():  # the disk fills up after the first state is safely written
        free = os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize
        with open(tiny_disk / "filler", "wb") as f:
            f.write(b"\0" * max(0, free - 4096))

    out = tiny_disk / "run"
    err = _train_then_break_the_disk(shapes_npz, out, monkeypatch, capsys, fill)
    assert "no space left on device while writing" in err
    assert not list(out.glob(".*.tmp"))
    (tiny_disk / "filler").unlink()
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert load_state(out / "state.pt")["step"] == 12


def test_a_disk_turned_read_only_mid_run_is_one_line_and_keeps_the_previous_state(shapes_npz, tiny_disk, monkeypatch,
                                                                                  capsys):
    out = tiny_disk / "run"
    err = _train_then_break_the_disk(shapes_npz, out, monkeypatch, capsys, lambda: subprocess.run(
        ["mount", "-o", "remount,ro", str(tiny_disk)], check=True))
    assert "read-only file system while writing" in err
    subprocess.run(["mount", "-o", "remount,rw", str(tiny_disk)], check=True)
    (out / ".lock").unlink()  # what this process's exit would make stale (it could not remove it read-only)
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert load_state(out / "state.pt")["step"] == 12


def test_a_read_only_run_folder_is_refused_in_one_line(shapes_npz, tiny_disk, capsys):
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    try:
        code = main(["train", "--data", str(shapes_npz), "--out", str(tiny_disk / "run"), "--steps", "2",
                     "--no-progress"])
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_disk)], check=True)
    err = capsys.readouterr().err
    assert code == 2 and "cannot be written (read-only file system)" in err and "Traceback" not in err, err


# ---------------------------------------------------------------------- owning a run folder
def test_a_second_trainer_on_a_busy_folder_is_refused_naming_the_holder(shapes_npz, tmp_path, capsys):
    out = tmp_path / "run"
    proc = subprocess.Popen([*_cli_train(shapes_npz, out)[:-2], "--minutes", "2"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (out / "state.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        code = main(["train", "--data", str(shapes_npz), "--out", str(out), "--resume", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and f"PID {proc.pid}" in err and socket.gethostname() in err and "in use" in err
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 130 and not (out / ".lock").exists()  # released on exit


def test_stale_and_foreign_locks(shapes_npz, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0}))
    result = train(_config(shapes_npz, out, steps=2))
    assert any("stale lock" in n and str(dead.pid) in n for n in result.notes)
    assert not (out / ".lock").exists()
    (out / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": 0}))
    with pytest.raises(UsageError, match="elsewhere.example"):
        train(_config(shapes_npz, out, steps=4), resume=True)


def test_an_existing_run_is_not_replaced_without_overwrite(shapes_npz, tmp_path, capsys):
    out = tmp_path / "run"
    train(_config(shapes_npz, out, steps=2))
    before = snapshot(tmp_path)
    args = ["train", "--data", str(shapes_npz), "--out", str(out), "--model", "tiny", "--image-size", "8", "--T", "50",
            "--steps", "3", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already holds" in err and "--overwrite" in err and "--resume" in err
    assert snapshot(tmp_path) == before
    assert main([*args, "--overwrite"]) == 0
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(moved) == 1 and load_state(moved[0] / "state.pt")["step"] == 2 and "moved the previous run" in \
        capsys.readouterr().err
    assert load_state(out / "state.pt")["step"] == 3


def test_resume_auto_starts_fresh_then_resumes(shapes_npz, tmp_path):
    out = tmp_path / "run"
    first = train(_config(shapes_npz, out, steps=3), resume="auto")
    assert first.step == 3 and any("starting a fresh run" in n for n in first.notes)
    second = train(_config(shapes_npz, out, steps=5), resume="auto")
    assert second.step == 5 and any("resuming" in n for n in second.notes)
    assert [int(r["restarts"]) for r in csv.DictReader(open(out / "metrics.csv"))] == [0, 0, 0, 1, 1]


def test_resume_drops_metrics_rows_after_the_state_and_stale_temp_files(shapes_npz, tmp_path):
    out = tmp_path / "run"
    train(_config(shapes_npz, out, steps=4))
    with open(out / "metrics.csv", "a") as f:  # as if killed after logging steps 5 and 6 but before saving them
        f.write("5,0,0.5,0.001,1.0,1.0,0,0\n6,0,0.5,0.001,1.0,1.0,0,0\n")
    (out / ".state.pt.abc123.tmp").write_bytes(b"half a state")
    (out / "model" / ".model.safetensors.x.tmp").write_bytes(b"half")
    train(_config(shapes_npz, out, steps=6), resume=True)
    assert [r[0] for r in _rows(out)] == [1, 2, 3, 4, 5, 6]
    assert not list(out.rglob("*.tmp"))


def test_progress_into_a_log_file_is_a_few_plain_lines(shapes_npz, tmp_path):
    log = tmp_path / "train.log"
    with open(log, "w") as f:
        args = [a for a in _cli_train(shapes_npz, tmp_path / "run") if a != "--no-progress"]
        subprocess.run(args, env=ENV, stderr=f, stdout=subprocess.DEVNULL, timeout=120)
    text = log.read_text()
    assert "\r" not in text
    lines = [line for line in text.splitlines() if "step" in line and "%" in line]
    assert 1 <= len(lines) <= 5, text[-2000:]
