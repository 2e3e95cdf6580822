"""Malformed-input corpus, train boundary: every case exits 2, names the thing, prints no traceback
and leaves every file as it was (see ``corpus.assert_refused``)."""

from __future__ import annotations

import json
import os
import pickle
import socket

import pytest

from corpus import assert_refused

TINY = ["--model", "tiny", "--image-size", "8", "--T", "50", "--batch-size", "16", "--steps", "2", "--no-progress",
        "--device", "cpu"]

# (flags, words the message must contain)
BAD_FLAGS = [
    (["--lr", "nan"], ["lr", "nan"]),
    (["--lr", "inf"], ["lr", "inf"]),
    (["--lr", "-1"], ["lr", "-1"]),
    (["--lr", "0"], ["lr", "0"]),
    (["--lr", "1e6"], ["lr", "1000000"]),
    (["--lr", "abc"], ["lr", "abc"]),
    (["--weight-decay", "nan"], ["weight-decay", "nan"]),
    (["--weight-decay", "-0.1"], ["weight_decay", "-0.1"]),
    (["--warmup", "-1"], ["warmup", "-1"]),
    (["--warmup", "1.5"], ["warmup", "1.5"]),
    (["--grad-clip", "-1"], ["grad_clip", "-1"]),
    (["--grad-clip", "nan"], ["grad-clip", "nan"]),
    (["--grad-clip=-inf"], ["grad-clip", "-inf"]),
    (["--ema-decay", "1"], ["ema_decay", "1"]),
    (["--ema-decay", "nan"], ["ema-decay", "nan"]),
    (["--ema-decay", "-0.5"], ["ema_decay", "-0.5"]),
    (["--p-uncond", "1"], ["p_uncond", "1"]),
    (["--p-uncond", "-0.1"], ["p_uncond", "-0.1"]),
    (["--p-uncond", "nan"], ["p-uncond", "nan"]),
    (["--snr-gamma", "0"], ["snr_gamma", "0"]),
    (["--snr-gamma", "inf"], ["snr-gamma", "inf"]),
    (["--seed", str(2**70)], ["seed", str(2**70)]),
    (["--seed", "-1"], ["seed", "-1"]),
    (["--seed", "1e3"], ["seed", "1e3"]),
    (["--image-size", "100000"], ["image_size", "100000"]),
    (["--image-size", "0"], ["image_size", "0"]),
    (["--image-size", "-8"], ["image_size", "-8"]),
    (["--image-size", "10"], ["image_size", "10"]),
    (["--batch-size", "0"], ["batch_size", "0"]),
    (["--batch-size", "-4"], ["batch_size", "-4"]),
    (["--batch-size", "1000000"], ["batch_size", "1000000"]),
    (["--T", "1"], ["T", "1"]),
    (["--T", "0"], ["T", "0"]),
    (["--T", "1000000000"], ["T", "1000000000"]),
    (["--steps", "0"], ["steps", "0"]),
    (["--steps", "-5"], ["steps", "-5"]),
    (["--steps", "2.5"], ["steps", "2.5"]),
    (["--epochs", "0"], ["epochs", "0"]),
    (["--epochs", "nan"], ["epochs", "nan"]),
    (["--minutes", "-1"], ["minutes", "-1"]),
    (["--minutes", "inf"], ["minutes", "inf"]),
    (["--checkpoint-every", "0"], ["checkpoint_every", "0"]),
    (["--checkpoint-minutes", "0"], ["checkpoint_minutes", "0"]),
    (["--checkpoint-minutes", "nan"], ["checkpoint-minutes", "nan"]),
    (["--log-every", "0"], ["log_every", "0"]),
    (["--sample-every", "-1"], ["sample_every", "-1"]),
    (["--nonfinite-limit", "0"], ["nonfinite_limit", "0"]),
    (["--model", "huge"], ["model", "huge"]),
    (["--context", "vector"], ["context_file", "vector"]),
    (["--context-file", "x.npy"], ["context_file", "x.npy"]),
    (["--prediction", "eps", "--zero-terminal-snr"], ["prediction", "eps"]),
    (["--prediction", "noise"], ["prediction", "noise"]),
    (["--precision", "fp16"], ["precision", "fp16"]),
    (["--device", "tpu"], ["device", "tpu"]),
    (["--device", "cuda:0"], ["device", "cuda:0"]),
    (["--schedule", "sqrt"], ["schedule", "sqrt"]),
    (["--resume", "maybe"], ["resume", "maybe"]),
]


@pytest.mark.parametrize("flags,names", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_training_flags(flags, names, shapes_npz, tmp_path, capsys):
    assert_refused(["train", "--data", shapes_npz, "--out", tmp_path / "run", *TINY, *flags], names, tmp_path, capsys)
    assert not (tmp_path / "run").exists()


def test_empty_data_is_refused(tmp_path, capsys):
    assert_refused(["train", "--data", "", "--out", tmp_path / "run", *TINY], ["data"], tmp_path, capsys)


def test_empty_out_is_refused(shapes_npz, tmp_path, capsys):
    assert_refused(["train", "--data", shapes_npz, "--out", "", *TINY], ["out"], tmp_path, capsys)


def test_out_that_is_a_file(shapes_npz, tmp_path, capsys):
    (tmp_path / "run").write_text("not a folder")
    assert_refused(["train", "--data", shapes_npz, "--out", tmp_path / "run", *TINY], ["out", "file"], tmp_path, capsys)


def test_resume_without_a_state(shapes_npz, tmp_path, capsys):
    assert_refused(["train", "--data", shapes_npz, "--out", tmp_path / "run", *TINY, "--resume"],
                   ["state.pt", "nothing to resume"], tmp_path, capsys)
    assert not (tmp_path / "run").exists()


def _state_folder(tmp_path, payload: bytes):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "state.pt").write_bytes(payload)
    return tmp_path / "run"


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("payload,names", [
    (pickle.dumps(_Boom()), ["state.pt", "could not be read safely"]),
    (b"PK\x03\x04 truncated zip", ["state.pt"]),
    (b"", ["state.pt"]),
], ids=["malicious-pickle", "truncated", "empty"])
def test_hostile_training_states(payload, names, tmp_path, capsys):
    run = _state_folder(tmp_path, payload)
    assert_refused(["train", "--out", run, "--resume", "--no-progress"], names, tmp_path, capsys)
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


def test_a_state_of_another_format(tmp_path, capsys):
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({"step": 3, "model": {}}, buffer)
    run = _state_folder(tmp_path, buffer.getvalue())
    assert_refused(["train", "--out", run, "--resume", "--no-progress"], ["state.pt", "format"], tmp_path, capsys)


def test_a_state_with_a_field_of_the_wrong_type(shapes_npz, tmp_path, capsys):
    import torch

    from tinydiffusion.store.checkpoint import load_state, save_state
    from tinydiffusion.training.train import TrainConfig, train

    train(TrainConfig(data=str(shapes_npz), out=str(tmp_path / "ok"), model="tiny", image_size=8, T=50, batch_size=16,
                      steps=1, progress=False, device="cpu"))
    state = load_state(tmp_path / "ok" / "state.pt")
    state["step"] = torch.tensor(3)
    save_state(tmp_path / "ok" / "state.pt", state)
    assert_refused(["train", "--out", tmp_path / "ok", "--resume", "--no-progress"], ["state.pt", "step"], tmp_path,
                   capsys)


def test_a_busy_run_folder(shapes_npz, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                         "started": 0, "command": "tinydiffusion train"}))
    assert_refused(["train", "--data", shapes_npz, "--out", tmp_path / "run", *TINY], [f"PID {os.getpid()}", "in use"],
                   tmp_path, capsys)


def test_an_existing_run_without_overwrite(shapes_npz, tmp_path, capsys):
    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "config.json").write_text("{}")
    assert_refused(["train", "--data", shapes_npz, "--out", tmp_path / "run", *TINY], ["already holds", "--overwrite"],
                   tmp_path, capsys)
