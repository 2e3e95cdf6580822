"""Data-parallel training under torchrun (2 processes, gloo, CPU): one clock and one stop decision for
all ranks, failures that keep the last consistent state, exact resume, world-size changes, elastic restarts."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinydiffusion.store.checkpoint import load_state

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TINYDIFFUSION_DIST_TIMEOUT": "60", "PYTHONUNBUFFERED": "1"}
ENV.pop("TINYDIFFUSION_TEST_FAULT", None)


def _train_args(data, out, *extra):
    return ["-m", "tinydiffusion", "train", "--data", str(data), "--out", str(out), "--model", "tiny", "--image-size",
            "8", "--T", "50", "--batch-size", "16", "--no-progress", "--log-every", "1", "--sample-every", "100000",
            "--device", "cpu", "--lr", "3e-3", "--warmup", "5", *extra]


def _run(args, nproc=2, fault=None, torchrun=(), timeout=180):
    env = {**ENV, **({"TINYDIFFUSION_TEST_FAULT": fault} if fault else {})}
    if nproc == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               *torchrun, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _rows(out):
    with open(Path(out) / "metrics.csv") as f:
        return [(int(r["step"]), r["loss"], r["lr"]) for r in csv.DictReader(f)]


def _same_weights(a: Path, b: Path) -> None:
    assert (a / "model" / "model.safetensors").read_bytes() == (b / "model" / "model.safetensors").read_bytes()
    sa, sb = load_state(a / "state.pt"), load_state(b / "state.pt")
    assert sa["step"] == sb["step"]
    for name, tensor in sa["model"].items():
        assert torch.equal(tensor, sb["model"][name]), name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: 2 processes, 12 steps, never stopped."""
    from conftest import shapes
    import numpy as np

    folder = tmp_path_factory.mktemp("ddp")
    images, labels, names = shapes()
    data = folder / "shapes.npz"
    np.savez_compressed(data, images=images, labels=labels, class_names=np.array(names))
    done = _run(_train_args(data, folder / "full", "--steps", "12", "--checkpoint-every", "4"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 12 steps") == 1  # one report, from rank 0
    return data, folder / "full"


def test_minutes_budget_with_a_late_rank_stops_all_ranks_together(uninterrupted, tmp_path):
    data, _ = uninterrupted
    for trial in range(2):
        out = tmp_path / f"m{trial}"
        done = _run(_train_args(data, out, "--minutes", "0.05"), fault="1:3:sleep=0.7")
        assert done.returncode == 0, done.stderr[-3000:]
        state = load_state(out / "state.pt")
        assert (out / "model" / "model.safetensors").exists() and state["step"] == _rows(out)[-1][0] > 3
        assert state["world"] == 2 and state["global_batch"] == 16


def test_a_rank_that_raises_keeps_the_last_consistent_state_and_resume_is_bitwise(uninterrupted, tmp_path):
    data, full = uninterrupted
    out = tmp_path / "split"
    failed = _run(_train_args(data, out, "--steps", "12", "--checkpoint-every", "4"), fault="1:6:raise", timeout=120)
    assert failed.returncode != 0 and "rank 1 fails at step 6" in failed.stderr
    assert load_state(out / "state.pt")["step"] == 6  # saved by rank 0 when its peer failed, not at step 4
    resumed = _run(_train_args(data, out, "--steps", "12", "--checkpoint-every", "4", "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same_weights(full, out)
    assert _rows(full) == _rows(out)


def test_torchrun_restarts_a_killed_worker_and_the_run_ends_as_if_never_killed(uninterrupted, tmp_path):
    data, full = uninterrupted
    out = tmp_path / "elastic"
    done = _run(_train_args(data, out, "--steps", "12", "--checkpoint-every", "4", "--resume", "auto"),
                fault="1:7:kill", torchrun=("--max-restarts", "1"))
    assert done.returncode == 0, done.stderr[:5000]
    assert "resuming" in done.stderr
    _same_weights(full, out)
    assert _rows(full) == [r for r in _rows(out)]
    restarts = [int(r["restarts"]) for r in csv.DictReader(open(out / "metrics.csv"))]
    assert restarts[0] == 0 and restarts[-1] == 1  # the restart is on record


def test_resume_on_another_number_of_processes_keeps_the_global_batch(uninterrupted, tmp_path):
    data, full = uninterrupted
    two_to_one = tmp_path / "two_to_one"
    shutil.copytree(full, two_to_one)
    done = _run(_train_args(data, two_to_one, "--steps", "16", "--resume"), nproc=1)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming a run of 2 process(es) on 1: the global batch stays 16 (16 per process)" in done.stderr
    state = load_state(two_to_one / "state.pt")
    assert state["step"] == 16 and state["world"] == 1 and state["global_batch"] == 16
    one_to_two = tmp_path / "one_to_two"
    assert _run(_train_args(data, one_to_two, "--steps", "4"), nproc=1).returncode == 0
    done = _run(_train_args(data, one_to_two, "--steps", "8", "--resume"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming a run of 1 process(es) on 2: the global batch stays 16 (8 per process)" in done.stderr
    assert [r[0] for r in _rows(one_to_two)] == list(range(1, 9))


def test_a_global_batch_that_does_not_split_evenly_is_refused(uninterrupted, tmp_path):
    data, _ = uninterrupted
    done = _run(_train_args(data, tmp_path / "odd", "--steps", "2", "--batch-size", "15"))
    assert done.returncode != 0 and "batch_size=15" in done.stderr and "multiple of the 2 processes" in done.stderr
    assert "tinydiffusion/train.py" not in done.stderr  # our processes print one line; the tracebacks are torchrun's


@pytest.mark.slow
def test_minutes_budget_with_a_late_rank_ten_times(uninterrupted, tmp_path):
    data, _ = uninterrupted
    for trial in range(10):
        out = tmp_path / f"m{trial}"
        done = _run(_train_args(data, out, "--minutes", "0.05"), fault=f"1:{trial + 1}:sleep=0.{trial}")
        assert done.returncode == 0, done.stderr[-3000:]
        assert load_state(out / "state.pt")["step"] == _rows(out)[-1][0]
