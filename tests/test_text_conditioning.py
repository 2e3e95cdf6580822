"""Text (and vector) contexts end to end with the fast hash encoder: train, cache, prompts, mixing, widths."""

import numpy as np
import pytest
import torch

from conftest import TINY_TRAIN
from tinydiffusion.cli.main import main
from tinydiffusion.errors import UsageError
from tinydiffusion.sampling.pipeline import load
from tinydiffusion.conditioning.text import HashEncoder
from tinydiffusion.training.train import TrainConfig, train


@pytest.fixture
def text_run(captioned_npz, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls = []
    real = HashEncoder.encode
    monkeypatch.setattr(HashEncoder, "encode", lambda self, texts: calls.append(len(texts)) or real(self, texts))
    config = TrainConfig(data=str(captioned_npz), out=str(tmp_path / "run"), context="text", encoder="hash",
                         model="tiny", image_size=8, T=50, batch_size=16, steps=3, progress=False, device="cpu")
    train(config)
    return config, calls, tmp_path


def test_text_model_records_its_encoder_and_caches_caption_embeddings(text_run):
    config, calls, tmp_path = text_run
    pipe = load(tmp_path / "run" / "model")
    assert pipe.context.kind == "text" and pipe.context.width == 384 and pipe.context.encoder == "hash-384"
    assert calls == [48]  # every caption once
    cached = list((tmp_path / ".tinydiffusion-cache").glob("captions-hash-384-*.npy"))
    assert len(cached) == 1
    train(TrainConfig(**{**config.__dict__, "out": str(tmp_path / "again")}))
    assert calls == [48]  # the second run reads the cache


def test_changed_captions_invalidate_the_cache(text_run, captioned_npz):
    config, calls, tmp_path = text_run
    with np.load(captioned_npz) as d:
        arrays = dict(d)
    arrays["captions"] = np.array([c + " shape" for c in arrays["captions"]])
    np.savez_compressed(captioned_npz, **arrays)
    train(TrainConfig(**{**config.__dict__, "out": str(tmp_path / "changed")}))
    assert calls == [48, 48]
    assert len(list((tmp_path / ".tinydiffusion-cache").glob("*.npy"))) == 2


def test_prompts_rows_and_mixing_from_python_and_cli(text_run):
    _, _, tmp_path = text_run
    pipe = load(tmp_path / "run" / "model")
    images = pipe.sample(["red square", "blue vertical bar"], n=2, sampler="ddim", steps=3, guidance=2.0)
    assert images.shape == (4, 3, 8, 8)
    mixed = pipe.context.mix("red square", "blue vertical bar", [0.0, 0.5, 1.0])
    assert torch.allclose(mixed[0], pipe.contexts("red square")[0]) and torch.allclose(mixed.norm(dim=1), torch.ones(3))
    out = tmp_path / "mix.npz"
    assert main(["sample", str(tmp_path / "run" / "model"), "--prompt", "red square", "--prompt-to", "green bar",
                 "--mix", "0,0.5,1", "--n", "2", "--steps", "2", "--sampler", "ddim", "--out", str(out)]) == 0
    assert np.load(out)["contexts"].shape == (6, 384)
    grid = tmp_path / "default.png"
    assert main(["sample", str(tmp_path / "run" / "model"), "--steps", "2", "--n", "1", "--out", str(grid)]) == 0


def test_wrong_width_contexts_are_refused(text_run, capsys):
    _, _, tmp_path = text_run
    pipe = load(tmp_path / "run" / "model")
    with pytest.raises(UsageError, match="context width"):
        pipe.sample(torch.zeros(1, 5), steps=2)
    np.save(tmp_path / "five.npy", np.zeros((2, 5), np.float32))
    assert main(["sample", str(tmp_path / "run" / "model"), "--context-file", str(tmp_path / "five.npy"),
                 "--steps", "2"]) == 2
    assert "D = 384" in capsys.readouterr().err


def test_class_model_refuses_prompts_it_cannot_read(shapes_npz, tmp_path, capsys):
    assert main(["train", "--data", str(shapes_npz), "--out", str(tmp_path / "c"), "--steps", "1", *TINY_TRAIN]) == 0
    assert main(["sample", str(tmp_path / "c" / "model"), "--prompt", "a red apple", "--steps", "2"]) == 2
    assert "known classes" in capsys.readouterr().err


def test_vector_contexts_of_any_width(shapes_npz, tmp_path):
    vectors = np.random.default_rng(0).normal(size=(48, 1024)).astype(np.float32)
    np.save(tmp_path / "vectors.npy", vectors)
    train(TrainConfig(data=str(shapes_npz), out=str(tmp_path / "v"), context="vector",
                      context_file=str(tmp_path / "vectors.npy"), model="tiny", image_size=8, T=50, batch_size=16,
                      steps=2, progress=False, device="cpu"))
    pipe = load(tmp_path / "v" / "model")
    assert pipe.context.kind == "vector" and pipe.context.width == 1024
    assert pipe.sample(torch.from_numpy(vectors[:2]), n=1, steps=2, sampler="ddim").shape == (2, 3, 8, 8)
    with pytest.raises(UsageError, match="N = 48"):
        np.save(tmp_path / "short.npy", vectors[:5])
        train(TrainConfig(data=str(shapes_npz), out=str(tmp_path / "w"), context="vector",
                          context_file=str(tmp_path / "short.npy"), model="tiny", image_size=8, steps=1, progress=False))


def test_text_context_needs_captions(shapes_npz, tmp_path):
    with pytest.raises(UsageError, match="no captions"):
        train(TrainConfig(data=str(shapes_npz), out=str(tmp_path / "x"), context="text", encoder="hash",
                          model="tiny", image_size=8, steps=1, progress=False))
