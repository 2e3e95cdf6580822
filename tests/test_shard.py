"""sample and eval under torchrun (2 processes, gloo on the CPU): the ranks share the batches, rank 0
gathers and writes once, and the result is bit-identical to the one-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tinydiffusion.cli.main import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import train_tiny
    from tinydiffusion.quality.featurenet import EvaluatorConfig, train_evaluator

    root = tmp_path_factory.mktemp("shard")
    train_tiny(root, 3)
    train_evaluator(EvaluatorConfig(data=str(root / "shapes.npz"), out=str(root / "ev"), size=8, low_size=4, width=8,
                                    epochs=2, members=1, batch_size=16, progress=False))
    return root


def _torchrun(*args: str, processes: int = 2, ok: bool = True) -> subprocess.CompletedProcess:
    """``tinydiffusion ARGS`` under torchrun, or as one plain process (``processes=1``) with the same
    one thread each, as torchrun gives its workers: float64 scoring may differ in its last bits between
    thread counts, which is not what these tests are about."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
              "-m", "tinydiffusion", "--"] if processes > 1 else [sys.executable, "-m", "tinydiffusion"]
    cmd = [*launch, *args, "--device", "cpu"]  # "--": torchrun would read --n as its own
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert (done.returncode == 0) == ok, done.stderr[-3000:]
    return done


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_sample_npz_gif_and_folder_are_bit_identical_to_one_process(trained):
    import torch

    model = str(trained / "run" / "model")
    # 3 rows × 5 seeds in batches of 4: four batches, two per rank, the last one short
    common = ["sample", model, "--sampler", "ddpm", "--steps", "6", "--n", "5", "--batch-size", "4"]
    one, two = trained / "one", trained / "two"
    assert main([*common, "--out", str(one / "s.npz"), "--gif", str(one / "s.gif")]) == 0
    assert main([*common, "--out", str(one / "folder")]) == 0
    assert not torch.distributed.is_initialized()  # one process: no process group
    done = _torchrun(*common, "--out", str(two / "s.npz"), "--gif", str(two / "s.gif"))
    assert done.stdout.count("15 images with ddpm") == 1  # one report, from rank 0
    a, b = np.load(one / "s.npz"), np.load(two / "s.npz")
    assert np.array_equal(a["images"], b["images"]) and a["images"].shape == (15, 8, 8, 3)
    assert np.array_equal(a["contexts"], b["contexts"]) and np.array_equal(a["labels"], b["labels"])
    meta = json.loads(str(b["metadata"]))
    assert meta["nfe"] == 12 and meta["rows"] == ["square", "hbar", "vbar"]  # guided (the card's 3): 2 per step
    assert (one / "s.gif").read_bytes() == (two / "s.gif").read_bytes()
    _torchrun(*common, "--out", str(two / "folder"))
    first, second = _files(one / "folder"), _files(two / "folder")
    assert sorted(first) == sorted(second) and len(first) == 16  # 15 PNGs and metadata.json
    assert all(first[name] == second[name] for name in first if name.endswith(".png"))
    assert sorted(p.name for p in two.iterdir()) == ["folder", "s.gif", "s.npz"]  # no temp folder left


def test_eval_metrics_under_torchrun_equal_one_process(trained):
    model, ev = str(trained / "run" / "model"), str(trained / "ev")
    common = ["eval", model, "--evaluator", ev, "--per-class", "6", "--steps", "3", "--batch-size", "4"]
    _torchrun(*common, "--out", str(trained / "eval1" / "eval.json"), processes=1)
    done = _torchrun(*common, "--out", str(trained / "eval2" / "eval.json"))
    assert done.stdout.count("FD-domain") == 1
    one = json.loads((trained / "eval1" / "eval.json").read_text())
    two = json.loads((trained / "eval2" / "eval.json").read_text())
    for report in (one, two):
        for key in ("seconds", "images_per_second", "settings"):
            report.pop(key)
    assert one == two and one["samples"] == 18
    assert (trained / "eval1" / "eval_closest.png").read_bytes() == (trained / "eval2" / "eval_closest.png").read_bytes()


def test_compare_under_torchrun_writes_once_the_same_samples(trained):
    """The grid of samples is bit-identical; the scores agree (to the last bits of the one-thread scoring)."""
    model, ev = str(trained / "run" / "model"), str(trained / "ev")
    common = ["compare", model, "--evaluator", ev, "--per-class", "4", "--settings", "ddim:2,dpmpp_2m:3",
              "--batch-size", "4", "--no-progress"]
    assert main([*common, "--out", str(trained / "cmp1")]) == 0
    done = _torchrun(*common, "--out", str(trained / "cmp2"))
    assert done.stdout.count("speed-up") == 1
    assert (trained / "cmp1" / "compare_grid.png").read_bytes() == (trained / "cmp2" / "compare_grid.png").read_bytes()
    one, two = (json.loads((trained / f"cmp{k}" / "compare.json").read_text())["rows"] for k in (1, 2))
    assert [(r["setting"], r["nfe"]) for r in two] == [("ddim:2", 4), ("dpmpp_2m:3", 6)]  # guided: 2 per step
    for a, b in zip(one, two):
        for key in ("fd_domain", "kid", "precision", "recall", "conditional_accuracy", "memorised_share"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-12), key


@pytest.mark.parametrize("command", ["eval", "compare"])
def test_a_refusal_only_rank_0_meets_is_every_ranks(trained, command):
    """The real data is read by rank 0 alone; when it is refused, every rank exits 2 with the message, none waits
    in a collective for a peer that left (which exited 1)."""
    import re

    model = str(trained / "run" / "model")
    extra = ["--settings", "ddim:2,ddim:3", "--out", str(trained / "cmp")] if command == "compare" else \
        ["--out", str(trained / "e.json")]
    done = _torchrun(command, model, "--evaluator", str(trained / "ev"), "--data", str(trained / "missing.npz"),
                     "--per-class", "2", *extra, ok=False)
    codes = re.findall(r"exitcode\s*:\s*(-?\d+)", done.stderr)
    # the first rank out exits 2 and torchrun then stops the other with SIGTERM (-15) if it has not exited yet;
    # that both ranks met the refusal is shown by the message, printed once by each (a rank waiting in a
    # collective, or one that exited 1, would not print it)
    assert codes and "2" in codes and set(codes) <= {"2", "-15"}, done.stderr[-3000:]
    assert done.stderr.count("missing.npz' is not allowed") == 2, done.stderr[-3000:]
