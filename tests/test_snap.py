"""Snapping prompts to the training captions (conditioning/snap.py): the identities (0 is the prompt, 1 is the
nearest caption's own row, the null context never moves), the card's captions and ``recommended.snap``, the
library, CLI and studio, and the refusals that name ``snap``."""

import json
import shutil

import pytest
import torch

from tinydiffusion.cli.main import main
from tinydiffusion.conditioning.snap import snap, training_captions
from tinydiffusion.conditioning.spec import ContextSpec
from tinydiffusion.errors import UsageError
from tinydiffusion.export.hub import usage_hint
from tinydiffusion.quality.evaluate import EvalConfig
from tinydiffusion.sampling import card
from tinydiffusion.sampling.pipeline import load
from tinydiffusion.training.train import TrainConfig, train
from tinydiffusion.vocab import MAX_CAPTIONS


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def test_snap_identities_on_pooled_rows():
    spec = ContextSpec.text("hash")
    g = torch.Generator().manual_seed(0)
    bank = _unit(torch.randn(5, spec.width, generator=g))
    rows = torch.cat([_unit(torch.randn(3, spec.width, generator=g)), torch.zeros(1, spec.width), bank[2:3]])
    same, nearest, cosine = snap(spec, rows, bank, 0.0)
    assert torch.allclose(same, rows, atol=1e-6)  # 0: the prompt as typed (unit rows stay themselves)
    assert nearest.tolist()[3:] == [-1, 2] and cosine[4] == pytest.approx(1.0)
    assert nearest[:3].tolist() == (_unit(rows[:3]) @ bank.T).argmax(1).tolist()
    full, nearest, _ = snap(spec, rows, bank, 1.0)
    assert torch.allclose(full[:3], bank[nearest[:3]], atol=1e-6)  # 1: the nearest caption's own row
    assert not full[3].any()  # the null context is never moved
    half, _, _ = snap(spec, rows, bank, 0.5)
    assert torch.allclose(half[:3].norm(dim=1), torch.ones(3), atol=1e-6)  # unit rows, as the network saw them
    assert torch.allclose(half[0], _unit(rows[0] + bank[nearest[0]]), atol=1e-6)


def test_snap_renormalises_each_token_row_and_keeps_padding():
    spec = ContextSpec.text("hash", tokens=2)
    w = spec.pooled_width
    bank = torch.zeros(2, spec.width)
    bank[:, :w], bank[:, w:2 * w] = _unit(torch.randn(2, w)), _unit(torch.randn(2, w))  # one token, one padding
    rows = bank[:1].clone()
    rows[0, :w] = _unit(bank[0, :w] + 0.1 * torch.randn(w))
    moved, nearest, _ = snap(spec, rows, bank, 0.5)
    parts = moved.reshape(1, 3, w)
    assert nearest.tolist() == [0] and torch.allclose(parts[0, :2].norm(dim=1), torch.ones(2), atol=1e-6)
    assert not parts[0, 2].any()


def test_snap_refuses_other_contexts():
    with pytest.raises(UsageError, match="snap"):
        snap(ContextSpec.classes(["a", "b"]), torch.eye(2), torch.eye(2), 1.0)


def test_training_captions_are_distinct_in_first_seen_order_and_bounded():
    assert training_captions(["b", "a", "b", "c"]) == ["b", "a", "c"]
    assert training_captions(None) is None and training_captions([]) is None
    assert training_captions([str(i) for i in range(MAX_CAPTIONS + 1)]) is None  # too many to list: no snapping


def test_card_snap_resolves_given_then_card_then_zero_and_names_refusals():
    config = {"captions": ["red square"], "recommended": {"sampler": "ddim", "steps": 3, "guidance": 1, "snap": 0.5}}
    assert card.snap(config) == 0.5 and card.snap(config, 1) == 1.0 and card.snap(config, 0) == 0.0
    assert card.snap({"captions": ["x"]}) == 0.0
    assert "prompts snapped 0.5 toward the nearest training caption" in usage_hint({**config, "schedule": {"T": 50}})
    for bad in (1.5, -0.1, "1", float("nan")):
        with pytest.raises(UsageError, match="snap"):
            card.snap(config, bad)
    with pytest.raises(UsageError, match="snap=0.5.*captions"):
        card.snap({}, 0.5)
    with pytest.raises(UsageError, match="snap"):
        EvalConfig(model="emoji", snap=2)


@pytest.fixture
def text_model(captioned_npz, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    train(TrainConfig(data=str(captioned_npz), out=str(tmp_path / "run"), context="text", encoder="hash",
                      model="tiny", image_size=8, T=50, batch_size=16, steps=3, progress=False, device="cpu"))
    return tmp_path / "run" / "model"


def test_a_text_model_lists_its_captions_and_samples_snapped(text_model):
    pipe = load(text_model)
    captions = pipe.config["captions"]
    assert len(captions) == len(set(captions)) == 12 and "red square" in captions
    kw = dict(n=2, sampler="ddim", steps=3, guidance=2)
    # a training caption snapped fully is itself; a prompt snapped fully is its nearest caption (to rounding)
    assert torch.allclose(pipe.plan("red square", snap=1, **kw).rows, pipe.contexts("red square"), atol=1e-6)
    plan = pipe.plan(["a red box", "none"], snap=1, **kw)
    nearest = plan.levers["snapped_to"][0]
    assert plan.levers["snap"] == 1.0 and nearest in captions and plan.levers["snapped_to"][1] is None
    assert torch.allclose(plan.rows[0], pipe.contexts(nearest)[0], atol=1e-6) and not plan.rows[1].any()
    half = pipe.plan("a red box", snap=0.5, **kw).rows[0]
    assert torch.allclose(half, _unit(pipe.contexts("a red box")[0] + pipe.contexts(nearest)[0]), atol=1e-6)
    assert pipe.sample("a red box", snap=0.5, **kw).shape == (2, 3, 8, 8)
    assert pipe.plan("a red box", **kw).levers["snap"] == 0.0  # no card setting: the prompt as typed


def test_the_card_recommends_snap_and_the_cli_says_where_prompts_went(text_model, tmp_path, capsys):
    carded = tmp_path / "carded"
    shutil.copytree(text_model, carded)
    config = json.loads((carded / "config.json").read_text())
    config["recommended"]["snap"] = 1.0
    (carded / "config.json").write_text(json.dumps(config))
    assert load(carded).plan("a red box", n=1).levers["snap"] == 1.0
    assert main(["sample", str(carded), "--prompt", "a red box", "--n", "1", "--steps", "2", "--sampler", "ddim",
                 "--out", str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr().out
    assert "snapped 1 of the way to the nearest training caption ('" in out and "(the model card's)" in out
    assert main(["sample", str(carded), "--prompt", "a red box", "--snap", "0", "--n", "1", "--steps", "2",
                 "--sampler", "ddim", "--out", str(tmp_path / "b.png")]) == 0
    assert "snapped" not in capsys.readouterr().out
    assert main(["sample", str(text_model), "--snap", "3", "--out", str(tmp_path / "c.png")]) == 2
    assert "snap=3" in capsys.readouterr().err


def test_a_class_model_refuses_snap_by_name(shapes_npz, tmp_path, capsys):
    train(TrainConfig(data=str(shapes_npz), out=str(tmp_path / "run"), model="tiny", image_size=8, T=50,
                      batch_size=16, steps=2, progress=False, device="cpu"))
    assert "captions" not in load(tmp_path / "run" / "model").config
    assert main(["sample", str(tmp_path / "run" / "model"), "--snap", "0.5", "--out", str(tmp_path / "x.png")]) == 2
    assert "snap=0.5" in capsys.readouterr().err
    assert main(["eval", "sprites", "--snap", "0.5", "--out", str(tmp_path / "e.json")]) == 2  # before any work
    assert "snap=0.5" in capsys.readouterr().err


def test_the_studio_takes_snap_for_a_text_model_and_refuses_it_elsewhere(text_model, shapes_npz, tmp_path):
    pytest.importorskip("fastapi", reason="the studio needs the 'serve' extra")
    pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx")
    from studio_helpers import checked_client
    from tinydiffusion.studio.web.app import create_app

    train(TrainConfig(data=str(shapes_npz), out=str(tmp_path / "runs" / "shapes"), model="tiny", image_size=8, T=50,
                      batch_size=16, steps=2, progress=False, device="cpu"))
    app = create_app([tmp_path / "runs"], device="cpu", queue_size=2, models={"words": text_model})
    for client in checked_client(app):
        listed = {m["name"]: m for m in client.get("/api/models").json()}
        assert listed["words"]["captions"] == 12 and listed["runs/shapes"]["captions"] == 0
        body = {"model": "words", "context": ["a red box"], "n": 1, "steps": 2, "sampler": "ddim", "snap": 1}
        r = client.post("/api/sample", json=body, headers={"Accept": "application/json"})
        assert r.status_code == 200, r.text
        assert r.json()["snap"] == 1.0 and r.json()["snapped_to"][0] in load(text_model).config["captions"]
        r = client.post("/api/sample", json={**body, "snap": 2}, headers={"Accept": "application/json"})
        assert r.status_code == 422 and "snap=2" in r.json()["error"]
        r = client.post("/api/sample", json={"model": "runs/shapes", "snap": 0.5}, headers={"Accept": "application/json"})
        assert r.status_code == 422 and "snap=0.5" in r.json()["error"]


def test_a_student_inherits_its_teachers_snap_and_captions(text_model, tmp_path):
    from tinydiffusion.training.distill import DistillConfig, distill

    carded = tmp_path / "carded"
    shutil.copytree(text_model, carded)
    config = json.loads((carded / "config.json").read_text())
    config["recommended"]["snap"] = 0.5
    (carded / "config.json").write_text(json.dumps(config))
    r = distill(DistillConfig(teacher=str(carded), out=str(tmp_path / "d"), steps=1, teacher_steps=2, iterations=2,
                              batch_size=8, sample_every=1000, checkpoint_every=1000, progress=False))
    student = load(r.model_dir)
    assert student.recommended["snap"] == 0.5 and student.config["captions"] == config["captions"]
    assert student.plan("a red box", n=1).levers["snapped_to"][0] in config["captions"]
