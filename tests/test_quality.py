"""Evaluator, eval and compare end to end on tiny models; the shipped evaluator against its record."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_TRAIN
from tinydiffusion.cli.main import main
from tinydiffusion.data.batches import as_tensor, make_batch
from tinydiffusion.data.load import load_dataset
from tinydiffusion.errors import UsageError
from tinydiffusion.quality.featurenet import EvaluatorConfig, load_evaluator, split, train_evaluator


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import numpy as np

    from conftest import shapes

    root = tmp_path_factory.mktemp("quality")
    images, labels, names = shapes(n_per_class=24)
    np.savez_compressed(root / "shapes.npz", images=images, labels=labels, class_names=np.array(names))
    ev = train_evaluator(EvaluatorConfig(data=str(root / "shapes.npz"), out=str(root / "ev"), size=8, low_size=4,
                                         width=8, epochs=15, batch_size=16, progress=False))
    assert main(["train", "--data", str(root / "shapes.npz"), "--out", str(root / "run"), "--steps", "3",
                 *TINY_TRAIN]) == 0
    return root, ev


def test_evaluator_records_held_out_accuracy_it_reproduces(tiny):
    root, ev = tiny
    loaded = load_evaluator(root / "ev")
    d = load_dataset(str(root / "shapes.npz"), size=8)
    _, test_idx = split(d.labels, 0.2, 0)
    _, logits = loaded.run(make_batch(as_tensor(d.images), torch.from_numpy(test_idx)))
    acc = (logits.argmax(1).numpy() == d.labels[test_idx]).mean()
    assert acc == pytest.approx(loaded.accuracy["8px"], abs=1e-9)
    assert loaded.accuracy["8px"] > 0.9  # three shapes are easy


def test_shipped_sprite_evaluator_matches_its_recorded_held_out_accuracy():
    ev = load_evaluator("sprites")
    cfg = ev.config["training"]
    d = load_dataset("sprites", size=cfg["size"])
    _, test_idx = split(d.labels, cfg["holdout"], cfg["seed"])
    _, logits = ev.run(make_batch(as_tensor(d.images), torch.from_numpy(test_idx)))
    acc = float((logits.argmax(1).numpy() == d.labels[test_idx]).mean())
    assert acc == pytest.approx(ev.accuracy[f"{cfg['size']}px"], abs=1e-9)
    assert acc >= 0.90  # the shipped ensemble reaches 90.6 %; a weaker one must not ship


def test_shipped_emoji_evaluator_matches_its_recorded_accuracy_on_the_data_sets_own_held_out_part():
    from tinydiffusion.quality.featurenet import holdout_split

    ev = load_evaluator("emoji")
    cfg = ev.config["training"]
    d = load_dataset("emoji", size=cfg["size"])
    train_idx, test_idx = holdout_split(d, cfg["holdout"], cfg["seed"])
    assert np.array_equal(test_idx, np.flatnonzero(d.split == 1))  # the captions no model trains on
    _, logits = ev.run(make_batch(as_tensor(d.images), torch.from_numpy(test_idx)))
    acc = float((logits.argmax(1).numpy() == d.labels[test_idx]).mean())
    assert acc == pytest.approx(ev.accuracy[f"{cfg['size']}px"], abs=1e-9)
    assert acc > 0.5  # 8 broad categories: 62.0 % shipped; chance is 1/8


def test_evaluator_validation_benchmark_keeps_the_test_images_out(tiny):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "evaluator_validation.py"
    spec = importlib.util.spec_from_file_location("evaluator_validation", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    root, _ = tiny
    config = EvaluatorConfig(data=str(root / "shapes.npz"), size=8, low_size=4, width=8, epochs=15, batch_size=16,
                             progress=False)
    labels = load_dataset(str(root / "shapes.npz"), size=8).labels
    train_idx, test_idx = split(labels, 0.2, 0)
    fit, val = bench.validation_split(labels, config)
    assert not set(fit) & set(val) and set(fit) | set(val) == set(train_idx) and not set(val) & set(test_idx)
    r = bench.validation_accuracy(config, seed=0)
    assert (r["fit_images"], r["validation_images"]) == (len(fit), len(val))
    assert set(r["validation_accuracy"]) == {"8px", "4px"} and r["validation_accuracy"]["8px"] > 0.5  # chance is 1/3


def test_split_is_stratified_and_disjoint():
    import numpy as np

    labels = np.repeat(np.arange(3), [10, 20, 30])
    train, test = split(labels, 0.2, 0)
    assert not set(train) & set(test) and len(train) + len(test) == 60
    assert np.bincount(labels[test]).tolist() == [2, 4, 6]


def test_eval_writes_its_report_and_closest_pairs(tiny, capsys):
    root, _ = tiny
    out = root / "eval.json"
    assert main(["eval", str(root / "run" / "model"), "--evaluator", str(root / "ev"), "--per-class", "4",
                 "--steps", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    for key in ("fd_domain", "fd_domain_bootstrap_std", "kid", "precision", "recall", "conditional_accuracy",
                "memorised_share", "seconds"):
        assert key in report
    # sampler and guidance not given: the model card's (dpmpp_2m, guidance 3), recorded as used
    assert report["samples"] == 12 and report["settings"]["sampler"] == "dpmpp_2m"
    assert report["settings"]["steps"] == 2 and report["settings"]["guidance"] == 3.0
    assert Image.open(root / "eval_closest.png").size[0] > 0
    assert "FD-domain" in capsys.readouterr().out


def test_compare_writes_every_promised_file(tiny, capsys):
    root, _ = tiny
    out = root / "cmp"
    assert main(["compare", str(root / "run" / "model"), "--evaluator", str(root / "ev"), "--per-class", "3",
                 "--settings", "ddpm:50,ddim:5,dpmpp_2m:3", "--out", str(out), "--no-progress"]) == 0
    for name in ("compare.json", "compare.csv", "compare_steps.png", "compare_seconds.png", "compare_accuracy.png",
                 "compare_grid.png"):
        assert (out / name).exists(), name
    rows = json.loads((out / "compare.json").read_text())["rows"]
    assert [r["nfe"] for r in rows] == [100, 10, 6]  # the card's guidance 3: both halves, 2 per step
    assert "speed-up" in capsys.readouterr().out


def test_mismatched_evaluator_and_bad_settings_are_refused(tiny, capsys):
    root, _ = tiny
    assert main(["eval", str(root / "run" / "model"), "--per-class", "2", "--steps", "2"]) == 2
    assert "evaluator classes" in capsys.readouterr().err
    assert main(["compare", str(root / "run" / "model"), "--evaluator", str(root / "ev"),
                 "--settings", "ddim:fast"]) == 2
    assert "SAMPLER:STEPS" in capsys.readouterr().err
    with pytest.raises(UsageError, match="not an evaluator"):
        load_evaluator(root / "run" / "model")


def test_bf16_sampling_keeps_fd_domain_within_tolerance_of_fp32(tiny):
    """The same seeds sampled in fp32 and under bf16 autocast: FD-domain within 5 % (bf16 rounds the
    network's activations to 8 bits of mantissa; the sampler's arithmetic stays fp32)."""
    root, _ = tiny
    reports = {}
    for precision in ("fp32", "bf16"):
        out = root / f"eval_{precision}.json"
        assert main(["eval", str(root / "run" / "model"), "--evaluator", str(root / "ev"), "--per-class", "8",
                     "--steps", "5", "--precision", precision, "--out", str(out)]) == 0
        reports[precision] = json.loads(out.read_text())
    assert reports["bf16"]["settings"]["precision"] == "bf16"
    fd32, fd16 = reports["fp32"]["fd_domain"], reports["bf16"]["fd_domain"]
    assert fd16 == pytest.approx(fd32, rel=0.05)
    assert fd16 != fd32  # bf16 really ran
