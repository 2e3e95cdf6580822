"""The malformed-input corpus for exported model folders, through ``tinydiffusion sample``: a broken
config.json (types, ranges, NaN, disagreeing sections) or safetensors file (truncated, garbage,
non-finite, wrong shapes) and paths that are not model folders must each exit 2 with the file and
the field named, no traceback, nothing written.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch

from corpus import assert_refused
from tinydiffusion.cli.main import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A valid exported folder, laid out as train.py writes it (tiny: 8 px, 3 classes, T = 50)."""
    from tinydiffusion.store.checkpoint import export_model
    from tinydiffusion.conditioning.spec import ContextSpec
    from tinydiffusion.models import build_model, preset
    from tinydiffusion.core.schedule import Schedule

    torch.manual_seed(0)
    config = preset("tiny", image_size=8, context_width=3, T=50)
    schedule, spec = Schedule.linear(50).rescale_zero_terminal_snr(), ContextSpec.classes(["a", "b", "c"])
    folder = tmp_path_factory.mktemp("model") / "m"
    export_model(folder, build_model(config), {
        "format": "tinydiffusion-model", "version": "0.1.0", "model": config.to_dict(), "schedule": schedule.to_dict(),
        "context": spec.to_dict(), "prediction": "v", "examples": ["a", "b", "c"],
        "training": {"data": "d.npz", "seed": 0, "config": {"steps": 1}}})
    return folder


def test_the_valid_model_folder_samples(model_dir, tmp_path):
    assert main(["sample", str(model_dir), "--steps", "2", "--sampler", "ddim", "--n", "1",
                 "--out", str(tmp_path / "x.png")]) == 0


def edit_config(change):
    """A corruption of config.json: ``change(config)`` edits the dict (or returns a replacement text)."""
    def corrupt(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        result = change(config)
        text = result if isinstance(result, (str, bytes)) else json.dumps(config)
        (folder / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    return corrupt


def set_field(path: str, value):
    def change(config):
        *parents, key = path.split(".")
        d = config
        for p in parents:
            d = d[p]
        d[key] = value
    return edit_config(change)


def drop_field(path: str):
    def change(config):
        *parents, key = path.split(".")
        d = config
        for p in parents:
            d = d[p]
        del d[key]
    return edit_config(change)


def edit_weights(change):
    def corrupt(folder: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(folder / "model.safetensors"))
        change(tensors)
        save_file(tensors, str(folder / "model.safetensors"))
    return corrupt


def write_file(name: str, data: bytes | None):
    def corrupt(folder: Path) -> None:
        if data is None:
            (folder / name).unlink()
        else:
            (folder / name).write_bytes(data)
    return corrupt


def _first(tensors):
    return next(k for k, v in tensors.items() if v.is_floating_point() and v.dim() == 4)


def _nan(tensors):
    tensors[_first(tensors)][0, 0, 0, 0] = float("nan")


def _inf(tensors):
    tensors[_first(tensors)][0, 0, 0, 0] = float("inf")


def _wider(tensors):
    key = _first(tensors)
    tensors[key] = torch.zeros(tensors[key].shape[0] + 1, *tensors[key].shape[1:])


def _dropped(tensors):
    del tensors[_first(tensors)]


def _extra(tensors):
    tensors["surprise.weight"] = torch.zeros(2)


def _as_int(tensors):
    key = _first(tensors)
    tensors[key] = tensors[key].to(torch.int32)


def _truncated_weights(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _bad_header_weights(folder: Path) -> None:
    header = b'{"x": {"dtype": "F32", "shape": [1000000000], "data_offsets": [0, 4000000000]}}'
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)


CFG, W = "config.json", "model.safetensors"
MODEL_CASES = [
    ("no-config", write_file(CFG, None), ["not an exported model folder", CFG]),
    ("no-weights", write_file(W, None), ["not an exported model folder", W]),
    ("config-list", write_file(CFG, b"[1, 2]"), [CFG, "a list", "JSON object"]),
    ("config-string", write_file(CFG, b'"model"'), [CFG, "a string", "JSON object"]),
    ("config-null", write_file(CFG, b"null"), [CFG, "null", "JSON object"]),
    ("config-number", write_file(CFG, b"3"), [CFG, "number", "JSON object"]),
    ("config-not-json", write_file(CFG, b"{"), [CFG, "not valid JSON"]),
    ("config-empty", write_file(CFG, b""), [CFG, "not valid JSON"]),
    ("config-not-utf8", write_file(CFG, b'{"model": "\xff\xfe"}'), [CFG, "not valid JSON"]),
    ("config-huge", write_file(CFG, b"{" + b" " * (2 << 20) + b"}"), [CFG, "bytes"]),
    ("config-deep", write_file(CFG, b"[" * 100_000 + b"]" * 100_000), [CFG, "not valid JSON"]),
    ("nan", edit_config(lambda c: json.dumps(c).replace('"dropout": 0.0', '"dropout": NaN')), [CFG, "NaN"]),
    ("infinity", edit_config(lambda c: json.dumps(c).replace('"beta_end": 0.02', '"beta_end": Infinity')),
     [CFG, "Infinity"]),
    ("overflow", edit_config(lambda c: json.dumps(c).replace('"beta_end": 0.02', '"beta_end": 1e400')),
     [CFG, "1e400"]),
    ("duplicate-key", edit_config(lambda c: json.dumps(c).replace('"prediction": "v"',
                                                                  '"prediction": "v", "prediction": "eps"')),
     [CFG, "prediction", "twice"]),
    ("image-size-string", set_field("model.image_size", "16"), [CFG, "model.image_size", "'16'"]),
    ("image-size-float", set_field("model.image_size", 8.0), [CFG, "model.image_size", "8.0"]),
    ("image-size-bool", set_field("model.image_size", True), [CFG, "model.image_size", "True"]),
    ("image-size-huge", set_field("model.image_size", 10**6), [CFG, "model.image_size", "1000000"]),
    ("image-size-odd", set_field("model.image_size", 10), [CFG, "image_size", "10", "multiple of 4"]),
    ("mults-int", set_field("model.mults", 3), [CFG, "model.mults", "3"]),
    ("mults-strings", set_field("model.mults", ["1", "2"]), [CFG, "model.mults[0]", "'1'"]),
    ("model-T-negative", set_field("model.T", -5), [CFG, "model.T", "-5"]),
    ("schedule-T-negative", set_field("schedule.T", -5), [CFG, "schedule.T", "-5"]),
    ("schedule-T-huge", set_field("schedule.T", 10**9), [CFG, "schedule.T", "1000000000"]),
    ("T-disagree", set_field("schedule.T", 60), [CFG, "model.T=50", "schedule.T=60"]),
    ("arch-unknown", set_field("model.arch", "transformer"), [CFG, "model.arch", "transformer", "unet"]),
    ("channels-4", set_field("model.channels", 4), [CFG, "model.channels", "4"]),
    ("base-tiny", set_field("model.base", 2), [CFG, "model.base", "2"]),
    ("dropout-one", set_field("model.dropout", 1.0), [CFG, "model.dropout", "1.0"]),
    ("attention-big", set_field("model.attention", [64]), [CFG, "model.attention[0]", "64"]),
    ("kind-int", set_field("schedule.kind", 7), [CFG, "schedule.kind", "7"]),
    ("kind-list", set_field("schedule.kind", ["linear"]), [CFG, "schedule.kind", "['linear']"]),
    ("kind-unknown", set_field("schedule.kind", "sigmoid"), [CFG, "schedule.kind", "sigmoid", "cosine"]),
    ("beta-end-above-one", set_field("schedule.beta_end", 1.5), [CFG, "schedule.beta_end", "1.5"]),
    ("beta-start-after-end", set_field("schedule.beta_start", 0.5), [CFG, "beta_start", "0.5"]),
    ("beta-negative", set_field("schedule.beta_start", -0.1), [CFG, "schedule.beta_start", "-0.1"]),
    ("cosine-setting-on-linear", set_field("schedule.s", 0.008), [CFG, "schedule.s", "linear"]),
    ("zero-terminal-T1", edit_config(lambda c: (c["schedule"].update(T=1), c["model"].update(T=1))),
     [CFG, "schedule", "strictly decreasing"]),
    ("zero-terminal-string", set_field("schedule.zero_terminal_snr", "yes"),
     [CFG, "schedule.zero_terminal_snr", "yes"]),
    ("context-kind-int", set_field("context.kind", 7), [CFG, "context.kind", "7"]),
    ("context-names-string", set_field("context.names", "abc"), [CFG, "context.names", "abc"]),
    ("context-names-repeat", set_field("context.names", ["a", "a", "b"]), [CFG, "context.names", "distinct"]),
    ("context-name-mixture", set_field("context.names", ["a", "b+c", "d"]), [CFG, "context.names[1]", "b+c"]),
    ("context-width-disagrees", set_field("context.width", 4), [CFG, "context_width=3", "context.width=4"]),
    ("context-width-names", edit_config(lambda c: c["context"].update(names=["a", "b"])), [CFG, "3", "2 names"]),
    ("context-text-no-encoder", set_field("context.kind", "text"), [CFG, "context"]),
    ("context-text-wrong-width", edit_config(lambda c: c["context"].update(kind="text", names=[], encoder="hash-8")),
     [CFG, "context.width", "hash-8"]),
    ("context-none-with-width", edit_config(lambda c: c["context"].update(kind="none", names=[])),
     [CFG, "context width", "3"]),
    ("prediction-unknown", set_field("prediction", "noise"), [CFG, "prediction", "noise", "eps"]),
    ("prediction-null", set_field("prediction", None), [CFG, "prediction", "None"]),
    ("unknown-top-field", set_field("temperature", 3), [CFG, "unknown field", "temperature"]),
    ("unknown-model-field", set_field("model.heads", 3), [CFG, "model", "unknown field", "heads"]),
    ("unknown-context-field", set_field("context.colour", "red"), [CFG, "context", "colour"]),
    ("missing-model", drop_field("model"), [CFG, "required", "model"]),
    ("missing-schedule", drop_field("schedule"), [CFG, "required", "schedule"]),
    ("missing-image-size", drop_field("model.image_size"), [CFG, "model", "image_size"]),
    ("model-section-list", set_field("model", [1, 2]), [CFG, "model", "a list"]),
    ("schedule-section-null", set_field("schedule", None), [CFG, "schedule", "null"]),
    ("format-evaluator", set_field("format", "tinydiffusion-evaluator"), [CFG, "evaluator"]),
    ("format-unknown", set_field("format", "pytorch"), [CFG, "format", "pytorch"]),
    ("examples-malformed", set_field("examples", [[1, 2, 3]]), [CFG, "examples[0]"]),
    ("training-list", set_field("training", []), [CFG, "training", "JSON object"]),
    ("weights-truncated", _truncated_weights, [W, "safetensors"]),
    ("weights-garbage", write_file(W, b"\x00" * 64), [W, "safetensors"]),
    ("weights-empty", write_file(W, b""), [W, "safetensors"]),
    ("weights-header-lies", _bad_header_weights, [W, "safetensors"]),
    ("weights-nan", edit_weights(_nan), [W, "NaN"]),
    ("weights-inf", edit_weights(_inf), [W, "infinite"]),
    ("weights-wrong-shape", edit_weights(_wider), [W, "shape", "config.json"]),
    ("weights-missing-tensor", edit_weights(_dropped), [W, "lack"]),
    ("weights-extra-tensor", edit_weights(_extra), [W, "surprise.weight"]),
    ("weights-int", edit_weights(_as_int), [W, "torch.int32", "floating"]),
    ("weights-for-another-config", set_field("model.base", 24), [W, "shape"]),
]


@pytest.mark.parametrize("corrupt, names", [pytest.param(c, n, id=i) for i, c, n in MODEL_CASES])
def test_sample_refuses_model_folder(corrupt, names, model_dir, tmp_path, capsys):
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    corrupt(folder)
    assert_refused(["sample", folder, "--steps", "2", "--sampler", "ddim", "--out", tmp_path / "x.png"],
                   names, tmp_path, capsys)


@pytest.mark.parametrize("name", ["../nowhere", "/etc", "sprites/../../", "", "  ", "../../../../../etc/passwd"])
def test_sample_refuses_paths_that_are_not_model_folders(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_refused(["sample", name, "--steps", "2", "--sampler", "ddim", "--out", tmp_path / "x.png"],
                   ["model"], tmp_path, capsys)
