"""The models and data that ship inside the package work right after install."""

import json

import pytest
import torch

from tinydiffusion.cli.main import main
from tinydiffusion.sampling.pipeline import load


def test_shipped_sprites_model_samples_by_name(tmp_path):
    pipe = load("sprites")
    assert pipe.context.names == ("hero", "monster", "item", "spell", "terrain") and pipe.image_size == 32
    assert next(pipe.model.parameters()).dtype == torch.float32  # stored as fp16, computed in fp32
    out = tmp_path / "hero.npz"
    assert main(["sample", "sprites", "--context", "hero", "--n", "2", "--sampler", "ddim", "--steps", "3",
                 "--guidance", "3", "--out", str(out)]) == 0
    import numpy as np

    d = np.load(out)
    assert d["images"].shape == (2, 32, 32, 3) and d["labels"].tolist() == [0, 0]


def test_shipped_emoji_model_samples_from_a_prompt(tmp_path):
    import pytest

    pytest.importorskip("sentence_transformers", reason="the 'text' extra is not installed")
    out = tmp_path / "apple.png"
    assert main(["sample", "emoji", "--prompt", "a red apple", "--n", "1", "--sampler", "ddim", "--steps", "2",
                 "--out", str(out)]) == 0
    from PIL import Image

    meta = json.loads(Image.open(out).text["tinydiffusion"])
    assert meta["rows"] == ["a red apple"]


def test_shipped_text_models_snap_typed_prompts_to_their_captions(capsys, tmp_path):
    """The emoji card snaps a typed prompt toward the nearest of its training captions, and says where it went."""
    pytest.importorskip("sentence_transformers", reason="the 'text' extra is not installed")
    for name in ("emoji", "emoji-fast"):
        pipe = load(name)
        assert 0 < pipe.recommended["snap"] <= 1 and "cat face" in pipe.config["captions"]
        assert pipe.plan("a cute cat", n=1).levers["snapped_to"] == ["cat face"]
    assert main(["sample", "emoji", "--prompt", "a cute cat", "--n", "1", "--sampler", "ddim", "--steps", "2",
                 "--out", str(tmp_path / "cat.png")]) == 0
    assert "nearest training caption ('cat face')" in capsys.readouterr().out


def test_shipped_models_have_cards_and_configs():
    from importlib import resources

    for name, made_by in (("sprites", "train"), ("emoji", "train"), ("sprites-fast", "distill"),
                          ("sprites-instant", "distill"), ("emoji-fast", "distill"), ("sprites-guide", "train")):
        folder = resources.files("tinydiffusion") / "assets" / "models" / name
        card = (folder / "README.md").read_text()
        assert f"tinydiffusion {made_by}" in card and ("H200" in card or "CPU cores" in card)  # how, and on what
        assert json.loads((folder / "config.json").read_text())["shipped_as"] == name


def test_loaded_on_cpu_samples_channels_last_with_the_same_images_per_seed():
    pipe = load("sprites")
    conv = next(m for m in pipe.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    fast = pipe.sample(["hero", "spell"], n=3, seed=5, sampler="ddim", steps=3, batch_size=4)
    one = pipe.sample(["spell"], seeds=[6], sampler="ddim", steps=3, batch_size=1)
    # an image depends on its seed, not its batch: equal up to float32 kernels that differ by batch size (1e-5
    # here, amplified by guidance; 1/100 of one 8-bit level of the [-1, 1] range is 8e-5)
    assert torch.allclose(fast[4:5], one, atol=8e-5)
    pipe.model.to(memory_format=torch.contiguous_format)
    plain = pipe.sample(["hero", "spell"], n=3, seed=5, sampler="ddim", steps=3, batch_size=4)
    assert torch.allclose(fast, plain, atol=1e-4)


def test_shipped_students_are_distilled_sprites_and_refuse_other_settings():
    """sprites-fast (4 evaluations) and sprites-instant (1) sample by name with their own settings only."""
    from tinydiffusion.errors import UsageError

    for name, steps in (("sprites-fast", 4), ("sprites-instant", 1)):
        pipe = load(name)
        assert pipe.distilled["steps"] == [steps] and pipe.distilled["guidance"] == 3.0
        assert pipe.recommended == {"sampler": "ddim", "steps": steps, "guidance": 3.0}
        teacher = load("sprites")
        assert pipe.config["model"] == teacher.config["model"] and pipe.context.names == teacher.context.names
        x = pipe.sample(["hero"], n=2)
        assert x.shape == (2, 3, 32, 32) and torch.isfinite(x).all()
        with pytest.raises(UsageError, match="distilled"):
            pipe.sample(["hero"], sampler="dpmpp_2m")


def test_shipped_text_student_samples_prompts_in_four_evaluations(tmp_path):
    """emoji-fast: the emoji network distilled to 4 evaluations, prompts in, its own settings only."""
    pytest.importorskip("sentence_transformers", reason="the 'text' extra is not installed")
    from tinydiffusion.errors import UsageError

    pipe, teacher = load("emoji-fast"), load("emoji")
    assert pipe.distilled["steps"] == [4] and pipe.recommended == {"sampler": "ddim", "steps": 4, "guidance": 3.0,
                                                                   "snap": teacher.recommended["snap"]}
    assert pipe.config["model"] == teacher.config["model"] and pipe.config["context"] == teacher.config["context"]
    x = pipe.sample(["a cute cat"], n=2)
    assert x.shape == (2, 3, 32, 32) and torch.isfinite(x).all()
    with pytest.raises(UsageError, match="distilled"):
        pipe.sample(["a cute cat"], steps=10)
    out = tmp_path / "cat.png"
    assert main(["sample", "emoji-fast", "--prompt", "a cute cat", "--n", "1", "--out", str(out)]) == 0
