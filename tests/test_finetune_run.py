"""``finetune`` end to end on tiny models: a toy class learnt with the old classes kept, adapters that load and
round-trip, a base never written, an exact resume, the report, text models, clear refusals, the studio's list."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_TRAIN, shapes, train_tiny
from corpus import assert_refused, snapshot
from tinydiffusion.cli.main import main
from tinydiffusion.errors import UsageError
from tinydiffusion.models.adapters import unmerge
from tinydiffusion.sampling.pipeline import load
from tinydiffusion.store.checkpoint import read_model
from tinydiffusion.training.finetune import FinetuneConfig, finetune


def _diagonals(folder, n=12, size=16, seed=0):
    """``n`` pictures of a toy class the shapes never show: a coloured diagonal on black, at ``size`` px (the
    tiny models are 8 px: each one is resized as training does)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        im = np.zeros((8, 8, 3), np.uint8)
        im[np.arange(8), np.arange(8)] = rng.integers(120, 256, 3)
        Image.fromarray(im).resize((size, size), Image.NEAREST).save(folder / f"diag{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    # a base that has learnt to use its classes (a few steps would leave the context pathway untrained)
    run = train_tiny(root, 150, "--lr", "5e-3", "--warmup", "10", "--checkpoint-every", "1000", "--sample-every", "1000")
    _diagonals(root / "diag")
    _diagonals(root / "diag_holdout", n=6, seed=1)
    return run / "model"


def _config(base, out, **kw):
    settings = dict(base=str(base), data=str(base.parent.parent / "diag"), out=str(out), name="diag", steps=6,
                    batch_size=16, report_samples=0, progress=False, sample_every=1000, checkpoint_every=1000)
    return FinetuneConfig(**{**settings, **kw})


def _losses(pipe, images, rows, steps=(10, 25, 40)):
    """The network's v-loss on ``images`` (uint8 N×H×W×3) with context ``rows`` at a few fixed steps, fixed noise."""
    x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    out = []
    for step in steps:
        t = torch.full((len(x0),), step)
        with torch.no_grad():
            v = pipe.model(pipe.schedule.q_sample(x0, t, noise), t, rows)
        out.append(((v - pipe.schedule.v_target(x0, t, noise)) ** 2).mean().item())
    return sum(out) / len(out)


def _outputs(pipe, images, labels, width):
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(len(images), 3, 8, 8, generator=g)
    t = torch.randint(0, 50, (len(images),), generator=g)
    with torch.no_grad():
        return pipe.model(x_t, t, torch.nn.functional.one_hot(torch.from_numpy(labels), width).float())


@pytest.mark.parametrize("method", ["lora", "column"])
def test_a_toy_class_is_learnt_and_the_old_classes_kept(base, tmp_path, method):
    """30 steps. LoRA: the new class's loss on its pictures falls well below anything the base does with them
    (unconditional or as any old class), and the old classes' loss on their own images barely moves. The new column
    alone learns less, but cannot change the old classes' outputs at all."""
    before = load(base)
    result = finetune(_config(base, tmp_path / "ft", steps=30, lr=5e-3, method=method, replay=0.8))
    after = load(result.model_dir)
    assert after.context.names == ("square", "hbar", "vbar", "diag") and result.step == 30
    diag = np.tile(np.stack([np.asarray(Image.open(p).resize((8, 8))) for p in
                             sorted((base.parent.parent / "diag").iterdir())]), (4, 1, 1, 1))
    learnt = _losses(after, diag, after.context.parse_many(["diag"]).expand(len(diag), -1))
    unconditional = _losses(before, diag, None)
    best = min([unconditional] + [_losses(before, diag, before.context.parse_many([name]).expand(len(diag), -1))
                                  for name in before.context.names])
    images, labels, _ = shapes()
    old = torch.nn.functional.one_hot(torch.from_numpy(labels), 4).float()
    old_before, old_after = _losses(before, images, old[:, :3]), _losses(after, images, old)
    if method == "lora":
        assert learnt < 0.85 * best and old_after < 1.1 * old_before
    else:
        assert learnt < 0.97 * unconditional
        assert torch.equal(_outputs(after, images, labels, 4), _outputs(before, images, labels, 3))


def test_the_report_is_printed_and_written(base, tmp_path):
    result = finetune(_config(base, tmp_path / "ft", steps=2, report_samples=4,
                              holdout=str(base.parent.parent / "diag_holdout")))
    report = json.loads((tmp_path / "ft" / "report.json").read_text())
    assert report == result.report and 0 <= report["recognised"] <= 1 and report["recognised_ceiling"] is not None
    assert "held-out" in report["recognised_reference"] and 0 <= report["near_copies"] <= 1
    assert "not measured" in (tmp_path / "ft" / "report.md").read_text()  # the sprites evaluator knows other classes
    assert (tmp_path / "ft" / "report.png").is_file() and (tmp_path / "ft" / "train" / "samples" / "final.png").is_file()


def test_adapter_round_trips_and_the_base_is_never_written(base, tmp_path):
    before = snapshot(base)
    result = finetune(_config(base, tmp_path / "ft"))
    assert snapshot(base) == before
    config, adapter = read_model(result.model_dir)
    assert config["adapter"]["base"] == str(base.resolve()) and config["adapter"]["method"] == "lora"
    assert set(adapter) and all(k.startswith(("base_model.model.", "new_columns.")) for k in adapter)
    _, base_weights = read_model(base)
    merged = load(result.model_dir).model.state_dict()
    back = unmerge(merged, adapter, scale=config["adapter"]["alpha"] / config["adapter"]["rank"])
    for key, value in base_weights.items():
        assert torch.allclose(back[key], value.float(), atol=1e-5), key
    assert merged["context_mlp.0.weight"].shape[1] == 4
    assert snapshot(base) == before  # loading reads the base only


def test_full_method_exports_an_ordinary_model(base, tmp_path):
    result = finetune(_config(base, tmp_path / "full", method="full"))
    config, _ = read_model(result.model_dir)
    assert "adapter" not in config and config["context"]["names"][-1] == "diag"
    assert load(result.model_dir).sample(["diag", "square"], n=1).shape == (2, 3, 8, 8)


def test_resume_is_exact(base, tmp_path, monkeypatch):
    whole = finetune(_config(base, tmp_path / "whole", steps=6))
    monkeypatch.setenv("TINYDIFFUSION_TEST_FAULT", "0:3:raise")
    with pytest.raises(RuntimeError, match="fails at step 3"):
        finetune(_config(base, tmp_path / "cut", steps=6, checkpoint_every=2))
    monkeypatch.delenv("TINYDIFFUSION_TEST_FAULT")
    with pytest.raises(UsageError, match="--resume"):
        finetune(_config(base, tmp_path / "cut", steps=6, checkpoint_every=2))
    resumed = finetune(_config(base, tmp_path / "cut", steps=6, checkpoint_every=2), resume=True)
    assert resumed.step == 6
    assert (whole.model_dir / "model.safetensors").read_bytes() == \
        (resumed.model_dir / "model.safetensors").read_bytes()
    with pytest.raises(UsageError, match="other settings.*lr"):
        finetune(_config(base, tmp_path / "cut", steps=6, lr=1e-2), resume=True)


def test_cli_samples_the_new_class_and_mixtures(base, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", str(base), "--data", str(base.parent.parent / "diag"), "--class", "diag", "--out",
                 str(out), "--steps", "4", "--batch-size", "16", "--report-samples", "3", "--method", "column",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "recognised:" in printed and "near copies" in printed and str(out / "report.md") in printed
    for context in ("diag", "diag=1,square=0.5"):
        assert main(["sample", str(out / "model"), "--context", context, "--n", "2", "--out",
                     str(tmp_path / f"{context}.png")]) == 0
        assert (tmp_path / f"{context}.png").is_file()
    record = json.loads((out / "finetune.json").read_text())
    assert record["finetune"]["replay"] == 0.0 and record["result"]["steps"] == 4
    with np.load(out / "data.npz") as d:
        assert list(d["class_names"]) == ["square", "hbar", "vbar", "diag"] and (d["labels"] == 3).all()


def test_adapter_refuses_a_changed_or_missing_base(base, tmp_path):
    copy = tmp_path / "base"
    shutil.copytree(base, copy)
    result = finetune(_config(copy, tmp_path / "ft", data=str(base.parent.parent / "diag")))
    weights = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(weights[:-4] + bytes(4))  # the last weight's bytes changed
    with pytest.raises(UsageError, match="sha256.*changed since the fine-tune"):
        load(result.model_dir)
    shutil.rmtree(copy)
    with pytest.raises(UsageError, match="not there"):
        load(result.model_dir)


def test_fine_tuned_models_are_listed_by_the_studio(base, tmp_path):
    from tinydiffusion.studio.catalog import Catalog

    finetune(_config(base, tmp_path / "runs" / "smiley"))
    entry = Catalog(runs=[tmp_path / "runs"]).model("runs/smiley")
    assert entry.available and entry.config["context"]["names"] == ["square", "hbar", "vbar", "diag"]
    assert load(entry.path).context.names[-1] == "diag"  # what the studio's worker loads


def test_bad_inputs_are_refused_clearly(base, tmp_path, capsys):
    root = base.parent.parent
    few = tmp_path / "few"
    _diagonals(few, n=3)
    run = ["finetune", str(base), "--out", str(tmp_path / "x"), "--steps", "2", "--no-progress"]
    cases = [(["--data", str(few), "--class", "diag"], ["data", "at least 8", "holds 3"]),
             (["--data", str(root / "diag"), "--class", "hbar"], ["class", "hbar", "square"]),
             (["--data", str(root / "diag")], ["class", "new class"]),
             (["--data", str(root / "diag"), "--class", "diag", "--prompt", "a line"], ["prompt", "class model"]),
             (["--data", str(tmp_path / "nowhere"), "--class", "diag"], ["data", "does not exist"]),
             (["--data", str(root / "diag"), "--class", "a,b"], ["class", "a,b"]),
             (["--data", str(root / "diag"), "--class", "diag", "--replay", "1"], ["replay", "[0, 1)"]),
             (["--data", str(root / "diag"), "--class", "diag", "--replay-data", str(root / "diag")], ["replay"])]
    for argv, names in cases:
        assert_refused(run + argv, names, tmp_path, capsys)
    assert not (tmp_path / "x").exists()


def test_a_student_is_refused_with_what_would_work(base, tmp_path, capsys):
    assert main(["distill", str(base), "--out", str(tmp_path / "student"), "--steps", "2", "--teacher-steps", "4",
                 "--iterations", "1", "--batch-size", "8", "--no-progress"]) == 0
    err = assert_refused(["finetune", str(tmp_path / "student" / "model"), "--data", str(base.parent.parent / "diag"),
                          "--class", "diag", "--out", str(tmp_path / "x")], ["distilled student", "distill"],
                         tmp_path, capsys)
    assert "finetune" in err and str(base) in err


@pytest.fixture(scope="module")
def text_base(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune_text")
    images, labels, names = shapes()
    captions = [f"{['red', 'green', 'blue'][i % 3]} {names[k]}" for i, k in enumerate(labels)]
    np.savez_compressed(root / "captioned.npz", images=images, labels=labels, class_names=np.array(names),
                        captions=np.array(captions))
    assert main(["train", "--data", str(root / "captioned.npz"), "--out", str(root / "run"), "--steps", "20",
                 "--context", "text", "--encoder", "hash", *TINY_TRAIN]) == 0
    _diagonals(root / "diag")
    return root / "run" / "model"


def test_text_model_learns_a_prompt(text_base, tmp_path, capsys):
    root = text_base.parent.parent
    args = ["finetune", str(text_base), "--data", str(root / "diag"), "--out", str(tmp_path / "t"), "--steps", "4",
            "--batch-size", "16", "--report-samples", "2", "--no-progress"]
    assert_refused(args, ["text model", "--prompt"], tmp_path, capsys)
    assert_refused(args + ["--prompt", "a zorp line", "--method", "column"], ["method", "text model"], tmp_path, capsys)
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({f"diag{i:02d}.png": "a zorp line" for i in range(11)}))
    assert_refused(args + ["--captions", str(captions)], ["captions", "diag11.png"], tmp_path, capsys)
    assert main(args + ["--prompt", "a zorp line"]) == 0
    pipe = load(tmp_path / "t" / "model")
    assert pipe.context.kind == "text" and pipe.sample(["a zorp line", "a blue zorp"], n=1).shape == (2, 3, 8, 8)
    report = json.loads((tmp_path / "t" / "report.json").read_text())
    assert report["concept"] == "a zorp line" and not report["old_classes"]["measured"]
    with np.load(tmp_path / "t" / "data.npz") as d:
        assert d["class_names"][0] == "concept" and "a zorp line" in set(d["captions"])


def test_adapters_compose_with_weights(base, tmp_path):
    """Column adapters compose exactly (each class as its own adapter draws it, the old ones untouched); LoRA
    updates add up with their weights; two adapters naming one class are refused."""
    from tinydiffusion.models.adapter_file import compose
    from tinydiffusion.models.adapters import merge

    one = finetune(_config(base, tmp_path / "one", method="column", steps=3)).model_dir
    two = finetune(_config(base, tmp_path / "two", method="column", steps=3, name="other", seed=1)).model_dir
    both = load(compose([(one, 1.0), (two, 1.0)], tmp_path / "both"))
    assert both.context.names == ("square", "hbar", "vbar", "diag", "other")
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([3, 10, 25, 40])
    for pipe, name in ((load(one), "diag"), (load(two), "other"), (load(base), "hbar")):
        with torch.no_grad():
            assert torch.allclose(both.model(x, t, both.context.parse_many([name]).expand(4, -1)),
                                  pipe.model(x, t, pipe.context.parse_many([name]).expand(4, -1)), atol=1e-6)
    lora_one = finetune(_config(base, tmp_path / "l1", steps=3)).model_dir
    lora_two = finetune(_config(base, tmp_path / "l2", steps=3, name="other", seed=1)).model_dir
    composed = load(compose([(lora_one, 1.0), (lora_two, 0.5)], tmp_path / "lboth")).model.state_dict()
    (c1, a1), (c2, a2) = read_model(lora_one), read_model(lora_two)
    s1, s2 = (c["adapter"]["alpha"] / c["adapter"]["rank"] for c in (c1, c2))
    expected = merge(merge({k: v.float() for k, v in read_model(base)[1].items()}, a1, s1), a2, s2, weight=0.5)
    for key, value in expected.items():
        assert torch.allclose(composed[key], value, atol=1e-5), key
    with pytest.raises(UsageError, match="'diag' another one has"):
        compose([(one, 1.0), (lora_one, 1.0)], tmp_path / "clash")
    with pytest.raises(UsageError, match="not an adapter"):
        compose([(one, 1.0), (base, 1.0)], tmp_path / "plain")


def test_compose_command_writes_a_model_that_samples_both_classes(base, tmp_path, capsys):
    one = finetune(_config(base, tmp_path / "one", method="column", steps=3)).model_dir
    two = finetune(_config(base, tmp_path / "two", method="column", steps=3, name="other", seed=1)).model_dir
    out = tmp_path / "both"
    assert main(["compose", str(one), f"{two}=0.5", "--out", str(out)]) == 0
    assert load(out).context.names[-2:] == ("diag", "other")
    assert main(["sample", str(out), "--context", "diag=1,other=0.5", "--n", "2", "--steps", "2",
                 "--out", str(tmp_path / "mix.png")]) == 0
    assert (tmp_path / "mix.png").is_file()
    capsys.readouterr()
    assert main(["compose", f"{one}=heavy", "--out", str(tmp_path / "bad")]) == 2
    assert "adapter weight 'heavy'" in capsys.readouterr().err
    assert main(["compose", str(one), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["compose", str(base), "--out", str(tmp_path / "plain")]) == 2
    assert "not an adapter" in capsys.readouterr().err
