"""Malformed-input corpus for sample, eval, compare and evaluator train: each bad input is refused at
the boundary with exit 2, no traceback, a message naming the parameter and the bad value, and no file
under the output folder touched (``corpus.assert_refused``). The library refuses the same through the
config dataclasses, checked at the end."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_TRAIN
from corpus import assert_refused
from tinydiffusion.cli.main import main

HUGE = str(2**70)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny class model (square, hbar, vbar; T = 50), an unconditional one, and a matching evaluator."""
    from conftest import shapes
    from tinydiffusion.quality.featurenet import EvaluatorConfig, train_evaluator

    root = tmp_path_factory.mktemp("corpus")
    images, labels, names = shapes()
    np.savez_compressed(root / "shapes.npz", images=images, labels=labels, class_names=np.array(names))
    for name, extra in (("class", []), ("uncond", ["--context", "none"])):
        assert main(["train", "--data", str(root / "shapes.npz"), "--out", str(root / name), "--steps", "2",
                     *TINY_TRAIN, *extra]) == 0
    train_evaluator(EvaluatorConfig(data=str(root / "shapes.npz"), out=str(root / "ev"), size=8, low_size=4, width=8,
                                    epochs=1, members=1, batch_size=16, progress=False))
    return {"model": str(root / "class" / "model"), "uncond": str(root / "uncond" / "model"), "ev": str(root / "ev")}


def _setup(tmp):
    """Inputs some cases need: files where folders should be, bad context files."""
    (tmp / "afile").write_text("not a folder")
    (tmp / "adir.png").mkdir()
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("a user's file that a folder output must never delete")
    np.save(tmp / "nan_rows.npy", np.array([[1, 0, 0], [np.nan, 0, 0]], np.float32))
    np.save(tmp / "inf_rows.npy", np.array([[np.inf, 0, 0]], np.float32))
    np.save(tmp / "wide.npy", np.zeros((2, 7), np.float32))
    np.save(tmp / "words.npy", np.array(["square", "hbar"]))
    np.save(tmp / "empty.npy", np.zeros((0, 3), np.float32))


S = ["sample", "{model}", "--steps", "2"]  # + --out in each case
SAMPLE = [  # (id, argv after the model, names the message must hold)
    ("seed-huge", ["--seed", HUGE], ["seed", HUGE]),
    ("seed-negative", ["--seed", "-1"], ["seed", "-1"]),
    ("seed-near-limit-with-n", ["--seed", str(2**63 - 2), "--n", "4"], ["seed", str(2**63 - 2)]),
    ("n-huge-png", ["--n", "1000000000", "--out", "{tmp}/g.png"], ["n", "1000000000", "memory"]),
    ("n-huge-npz", ["--n", "1000000000", "--out", "{tmp}/g.npz"], ["n", "1000000000", "memory"]),
    ("n-huge-folder", ["--n", "1000000000", "--out", "{tmp}/folder"], ["n", "1000000000", "disk"]),
    ("n-2-to-70", ["--n", HUGE], ["n", HUGE]),
    ("n-big-gif", ["--n", "100000", "--out", "{tmp}/folder", "--gif", "{tmp}/a.gif"], ["n", "100000", "--gif"]),
    ("n-zero", ["--n", "0"], ["n=0"]),
    ("n-negative", ["--n", "-5"], ["n=-5"]),
    ("n-float", ["--n", "3.5"], ["--n", "3.5"]),
    ("batch-size-zero", ["--batch-size", "0"], ["batch_size=0"]),
    ("batch-size-negative", ["--batch-size", "-1"], ["batch_size=-1"]),
    ("steps-zero", ["--steps", "0"], ["steps=0"]),
    ("steps-negative", ["--steps", "-3"], ["steps=-3"]),
    ("steps-over-T", ["--steps", "51"], ["steps=51", "1..50"]),
    ("guidance-nan", ["--guidance", "nan"], ["--guidance", "nan"]),
    ("guidance-inf", ["--guidance", "inf"], ["--guidance", "inf"]),
    ("guidance-negative", ["--guidance", "-1"], ["guidance=-1"]),
    ("guidance-word", ["--guidance", "strong"], ["--guidance", "strong"]),
    ("eta-inf", ["--sampler", "ddim", "--eta", "inf"], ["--eta", "inf"]),
    ("eta-nan", ["--sampler", "ddim", "--eta", "nan"], ["--eta", "nan"]),
    ("eta-over-1", ["--sampler", "ddim", "--eta", "1.5"], ["eta=1.5"]),
    ("rescale-over-1", ["--guidance", "3", "--guidance-rescale", "1.5"], ["guidance_rescale=1.5"]),
    ("rescale-negative", ["--guidance-rescale", "-0.1"], ["guidance_rescale=-0.1"]),
    ("rescale-nan", ["--guidance-rescale", "nan"], ["--guidance-rescale", "nan"]),
    ("mix-nan", ["--context", "square", "--prompt-to", "hbar", "--mix", "0,nan"], ["--mix", "nan"]),
    ("mix-over-1", ["--context", "square", "--prompt-to", "hbar", "--mix", "1.5"], ["mix=1.5"]),
    ("mix-without-prompt-to", ["--mix", "0.5"], ["mix", "0.5", "--prompt-to"]),
    ("prompt-to-two-starts", ["--context", "square", "--context", "hbar", "--prompt-to", "vbar"], ["prompt_to", "vbar"]),
    ("context-weight-nan", ["--context", "square=nan"], ["square", "nan"]),
    ("context-weight-inf", ["--context", "hbar=1,vbar=inf"], ["vbar", "inf"]),
    ("context-unknown", ["--context", "dragon"], ["dragon", "square, hbar, vbar"]),
    ("context-file-nan-row", ["--context-file", "{tmp}/nan_rows.npy"], ["context_file", "nan_rows.npy", "row 1"]),
    ("context-file-inf-row", ["--context-file", "{tmp}/inf_rows.npy"], ["context_file", "inf_rows.npy", "row 0"]),
    ("context-file-width", ["--context-file", "{tmp}/wide.npy"], ["context_file", "wide.npy", "(2, 7)"]),
    ("context-file-strings", ["--context-file", "{tmp}/words.npy"], ["context_file", "words.npy"]),
    ("context-file-empty", ["--context-file", "{tmp}/empty.npy"], ["context_file", "empty.npy"]),
    ("context-file-missing", ["--context-file", "{tmp}/nowhere.npy"], ["context_file", "nowhere.npy"]),
    ("context-file-and-context", ["--context-file", "{tmp}/wide.npy", "--context", "square"], ["context_file", "not both"]),
    ("out-suffix", ["--out", "{tmp}/x.jpg"], ["out", "x.jpg", ".png"]),
    ("out-parent-is-file", ["--out", "{tmp}/afile/x.png"], ["out", "afile", "is a file"]),
    ("out-folder-is-file", ["--out", "{tmp}/afile"], ["out", "afile", "existing file"]),
    ("out-png-is-folder", ["--out", "{tmp}/adir.png"], ["out", "adir.png", "existing folder"]),
    ("out-folder-of-other-files", ["--out", "{tmp}/mine"], ["out", "mine", "notes.txt"]),
    ("out-working-folder", ["--out", "."], ["out", "'.'", "working folder"]),
    ("out-above-working-folder", ["--out", ".."], ["out", "'..'", "working folder"]),
    ("gif-suffix", ["--gif", "{tmp}/anim.png"], ["gif", "anim.png", ".gif"]),
    ("gif-parent-is-file", ["--gif", "{tmp}/afile/a.gif"], ["gif", "afile"]),
    ("sampler-unknown", ["--sampler", "foo"], ["--sampler", "foo"]),
    ("option-not-taken-eta", ["--sampler", "ddpm", "--eta", "0.3"], ["eta=0.3", "ddpm"]),
    ("option-not-taken-variance", ["--sampler", "ddim", "--variance", "small"], ["variance='small'", "ddim"]),
    ("option-not-taken-extra-noise", ["--sampler", "dpmpp_2m", "--no-extra-noise"], ["extra_noise", "dpmpp_2m"]),
    ("prediction-mismatch", ["--prediction", "eps"], ["'v'", "'eps'"]),
    ("device-unknown", ["--device", "tpu"], ["device='tpu'"]),
    ("precision-unknown", ["--precision", "fp16"], ["--precision", "fp16"]),
]


@pytest.mark.parametrize("args, names", [pytest.param(a, n, id=i) for i, a, n in SAMPLE])
def test_sample_refuses(models, tmp_path, monkeypatch, capsys, args, names):
    _refused(S + args, names, models, tmp_path, monkeypatch, capsys)


def test_sample_refuses_a_missing_model(tmp_path, monkeypatch, capsys):
    _refused(["sample", "{tmp}/nowhere", "--out", "{tmp}/g.png"], ["nowhere"], {}, tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize("args, names", [
    pytest.param(["--context", "square"], ["context", "square", "unconditional"], id="context-for-uncond"),
    pytest.param(["--context-file", "{tmp}/wide.npy"], ["context_file", "unconditional"], id="context-file-for-uncond"),
])
def test_sample_refuses_contexts_for_an_unconditional_model(models, tmp_path, monkeypatch, capsys, args, names):
    _refused(["sample", "{uncond}", "--steps", "2", *args], names, models, tmp_path, monkeypatch, capsys)


E = ["eval", "{model}", "--evaluator", "{ev}", "--steps", "2", "--per-class", "2"]
EVAL = [
    ("per-class-zero", ["--per-class", "0"], ["per_class=0"]),
    ("per-class-one", ["--per-class", "1"], ["per_class=1"]),
    ("per-class-negative", ["--per-class", "-4"], ["per_class=-4"]),
    ("per-class-huge", ["--per-class", "1000000000000"], ["per_class=1000000000000", "memory"]),
    ("steps-zero", ["--steps", "0"], ["steps=0"]),
    ("steps-over-T", ["--steps", "51"], ["steps=51"]),
    ("guidance-nan", ["--guidance", "nan"], ["--guidance", "nan"]),
    ("guidance-negative", ["--guidance", "-2"], ["guidance=-2"]),
    ("seed-huge", ["--seed", HUGE], ["seed", HUGE]),
    ("batch-size-zero", ["--batch-size", "0"], ["batch_size=0"]),
    ("sampler-unknown", ["--sampler", "foo"], ["sampler='foo'"]),
    ("threshold-nan", ["--memorisation-threshold", "nan"], ["--memorisation-threshold", "nan"]),
    ("threshold-negative", ["--memorisation-threshold", "-1"], ["memorisation_threshold=-1"]),
    ("ratio-zero", ["--memorisation-ratio", "0"], ["memorisation_ratio=0"]),
    ("ratio-over-1", ["--memorisation-ratio", "2"], ["memorisation_ratio=2"]),
    ("out-suffix", ["--out", "{tmp}/report.txt"], ["out", "report.txt", ".json"]),
    ("out-parent-is-file", ["--out", "{tmp}/afile/r.json"], ["out", "afile"]),
    ("precision-unknown", ["--precision", "fp16"], ["--precision", "fp16"]),
]


@pytest.mark.parametrize("args, names", [pytest.param(a, n, id=i) for i, a, n in EVAL])
def test_eval_refuses(models, tmp_path, monkeypatch, capsys, args, names):
    _refused(E + ["--out", "{tmp}/eval.json"] + args, names, models, tmp_path, monkeypatch, capsys)


C = ["compare", "{model}", "--evaluator", "{ev}", "--per-class", "2", "--no-progress"]
COMPARE = [
    ("empty-steps", ["--settings", "ddim:"], ["settings", "ddim:"]),
    ("word-steps", ["--settings", "ddim:abc"], ["settings", "ddim:abc"]),
    ("unknown-sampler", ["--settings", "foo:10"], ["settings", "foo:10"]),
    ("zero-steps", ["--settings", "ddim:0"], ["settings", "ddim:0"]),
    ("negative-steps", ["--settings", "ddim:5,ddim:-1"], ["settings", "ddim:-1"]),
    ("no-colon", ["--settings", "ddim"], ["settings", "ddim"]),
    ("over-T", ["--settings", "ddim:5,ddpm:51"], ["settings", "ddpm:51", "1..50"]),
    ("nothing", ["--settings", ","], ["settings", "()"]),
    ("per-class-one", ["--per-class", "1"], ["per_class=1"]),
    ("guidance-inf", ["--guidance", "inf"], ["--guidance", "inf"]),
    ("seed-negative", ["--seed", "-1"], ["seed=-1"]),
    ("batch-size-zero", ["--batch-size", "0"], ["batch_size=0"]),
    ("out-is-file", ["--out", "{tmp}/afile"], ["out", "afile", "existing file"]),
]


@pytest.mark.parametrize("args, names", [pytest.param(a, n, id=i) for i, a, n in COMPARE])
def test_compare_refuses(models, tmp_path, monkeypatch, capsys, args, names):
    _refused(C + ["--out", "{tmp}/cmp"] + args, names, models, tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize("command", ["eval", "compare"])
def test_eval_and_compare_refuse_a_model_without_classes(models, tmp_path, monkeypatch, capsys, command):
    out = "{tmp}/eval.json" if command == "eval" else "{tmp}/cmp"
    _refused([command, "{uncond}", "--evaluator", "{ev}", "--per-class", "2", "--out", out],
             [command, "class-conditional", "'none'"], models, tmp_path, monkeypatch, capsys)


T = ["evaluator", "train", "--data", "sprites", "--no-progress"]
EVALUATOR = [
    ("epochs-zero", ["--epochs", "0"], ["epochs=0"]),
    ("epochs-negative", ["--epochs", "-1"], ["epochs=-1"]),
    ("members-zero", ["--members", "0"], ["members=0"]),
    ("holdout-zero", ["--holdout", "0"], ["holdout=0"]),
    ("holdout-one", ["--holdout", "1"], ["holdout=1"]),
    ("holdout-over-1", ["--holdout", "1.5"], ["holdout=1.5"]),
    ("holdout-nan", ["--holdout", "nan"], ["--holdout", "nan"]),
    ("lr-zero", ["--lr", "0"], ["lr=0"]),
    ("lr-negative", ["--lr", "-0.001"], ["lr=-0.001"]),
    ("lr-inf", ["--lr", "inf"], ["--lr", "inf"]),
    ("size-small", ["--size", "4"], ["size=4"]),
    ("size-huge", ["--size", "100000"], ["size=100000"]),
    ("low-size-zero", ["--low-size", "0"], ["low_size=0"]),
    ("low-size-over-size", ["--size", "16", "--low-size", "32"], ["low_size=32", "1..16"]),
    ("width-zero", ["--width", "0"], ["width=0"]),
    ("width-not-multiple-of-8", ["--width", "12"], ["width=12", "multiple of 8"]),
    ("width-huge", ["--width", "1000000"], ["width=1000000", "memory"]),
    ("batch-size-zero", ["--batch-size", "0"], ["batch_size=0"]),
    ("batch-size-huge", ["--batch-size", "1000000000"], ["batch_size=1000000000", "memory"]),
    ("seed-negative", ["--seed", "-1"], ["seed=-1"]),
    ("out-is-file", ["--out", "{tmp}/afile"], ["out", "afile", "existing file"]),
]


@pytest.mark.parametrize("args, names", [pytest.param(a, n, id=i) for i, a, n in EVALUATOR])
def test_evaluator_train_refuses(tmp_path, monkeypatch, capsys, args, names):
    _refused(T + ["--out", "{tmp}/ev"] + args, names, {}, tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize("args, names", [
    pytest.param(["--seconds", "nan"], ["--seconds", "nan"], id="seconds-nan"),
    pytest.param(["--seconds", "0"], ["seconds=0"], id="seconds-zero"),
    pytest.param(["--eval-batches", "1,x"], ["--eval-batches", "1,x"], id="eval-batches-word"),
    pytest.param(["--eval-batches", "0"], ["eval_batches=0"], id="eval-batches-zero"),
    pytest.param(["--batch-size", "0"], ["batch_size=0"], id="batch-size-zero"),
    pytest.param(["--out", "{tmp}/bench.txt"], ["out", "bench.txt"], id="out-suffix"),
])
def test_bench_refuses_before_measuring(tmp_path, monkeypatch, capsys, args, names):
    _refused(["bench", "--presets", "tiny", "--out", "{tmp}/bench.json", *args], names, {}, tmp_path, monkeypatch,
             capsys)


def test_the_library_refuses_what_the_cli_refuses(tmp_path):
    """The config dataclasses and ``Pipeline.sample`` are boundaries too: same checks, same messages."""
    import torch

    from tinydiffusion import UsageError
    from tinydiffusion.quality.compare import CompareConfig
    from tinydiffusion.quality.evaluate import EvalConfig
    from tinydiffusion.quality.featurenet import EvaluatorConfig
    from tinydiffusion.sampling.generate import SampleConfig

    for make, match in [(lambda: SampleConfig("m", guidance=float("nan")), "guidance=nan"),
                        (lambda: SampleConfig("m", eta=float("inf"), sampler="ddim"), "eta=inf"),
                        (lambda: SampleConfig("m", mix=(float("nan"),), prompt_to="b", contexts=("a",)), "mix=nan"),
                        (lambda: SampleConfig("m", seed=2**70), "seed="),
                        (lambda: EvalConfig("m", per_class=0), "per_class=0"),
                        (lambda: CompareConfig("m", settings=("ddim:0",)), "settings='ddim:0'"),
                        (lambda: EvaluatorConfig(epochs=0), "epochs=0")]:
        with pytest.raises(UsageError, match=match):
            make()
    from tinydiffusion.conditioning.spec import ContextSpec
    from tinydiffusion.models import build_model, preset
    from tinydiffusion.sampling.pipeline import Pipeline
    from tinydiffusion.core.schedule import Schedule

    config = {"model": {"channels": 3, "image_size": 8, "base": 16, "mults": [1, 2, 2]}}
    pipe = Pipeline(build_model(preset("tiny", image_size=8, context_width=3)), Schedule.linear(10),
                    ContextSpec.classes(["a", "b", "c"]), config, "eps")
    for kwargs, match in [({"context": torch.tensor([[1.0, float("nan"), 0.0]])}, "row 0"),
                          ({"context": "a", "guidance": float("nan")}, "guidance=nan"),
                          ({"context": "a", "seed": 2**70}, "seed="),
                          ({"context": "a", "seeds": [1, -1]}, r"seeds\[1\]=-1"),
                          ({"context": "a", "n": 0}, "n=0"),
                          ({"context": "a", "steps": 11}, "steps=11"),
                          ({"context": "a", "sampler": "ddim", "eta": float("nan")}, "eta=nan"),
                          ({"context": "a", "n": 10**12}, "memory")]:
        with pytest.raises(UsageError, match=match):
            pipe.sample(**kwargs)


def _refused(argv, names, models, tmp, monkeypatch, capsys):
    monkeypatch.chdir(tmp)  # a default output (samples.png, eval.json) would land here and be seen
    _setup(tmp)
    if "--out" not in argv and argv[0] == "sample":
        argv = [*argv, "--out", "{tmp}/samples.png"]
    argv = [a.format(tmp=tmp, **models) for a in argv]
    assert_refused(argv, [n.format(tmp=tmp) for n in names], tmp, capsys)
