"""Adapter math (models/adapters.py): LoRA equals its merged weight, merge and unmerge are inverses, an adapted
network starts as its base, the new-column method cannot change the old classes; the adapter file's checks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tinydiffusion.core.loss import diffusion_loss
from tinydiffusion.core.schedule import Schedule
from tinydiffusion.models import build_model, preset
from tinydiffusion.models.adapters import (LoRA, adapt, adapter_tensors, check_adapter, lora_targets, merge, unmerge,
                                           widen)
from tinydiffusion.store.modelfile import ADAPTER, TOP
from tinydiffusion.store.schema import validate
from tinydiffusion.errors import UsageError


def _base(seed=0, width=3):
    torch.manual_seed(seed)
    net = build_model(preset("tiny", image_size=8, context_width=width))
    with torch.no_grad():  # a trained-looking network: the zero-initialised output conv made non-zero
        net.out.weight.normal_(0, 0.1)
    return net.eval()


def _adapted(base, method, new=1, rank=2, seed=0):
    """The base widened by ``new`` columns and adapted, with its LoRA factors and new columns made non-zero."""
    width = base.context_width
    net = build_model(preset("tiny", image_size=8, context_width=width + new))
    net.load_state_dict(widen(base.state_dict(), new))
    adapt(net, width, rank=rank if method == "lora" else None, alpha=2.0 * rank, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.requires_grad:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return net.eval()


def _inputs(width, n=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    t = torch.randint(0, 50, (n,), generator=g)
    c = torch.nn.functional.one_hot(torch.arange(n) % width, width).float()
    return x, t, c


@pytest.mark.parametrize("layer", [nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(4, 6, 1), nn.Linear(5, 7)])
def test_lora_layer_equals_its_merged_weight(layer):
    lora = LoRA(copy.deepcopy(layer), rank=3, alpha=6.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(2, 4, 5, 5) if isinstance(layer, nn.Conv2d) else torch.randn(2, 5)
    adapter = adapter_tensors(nn.ModuleDict({"l": lora}))
    merged = merge({"l.weight": layer.weight.detach(), "l.bias": layer.bias.detach()}, adapter, scale=2.0)
    plain = copy.deepcopy(layer)
    plain.load_state_dict({"weight": merged["l.weight"], "bias": merged["l.bias"]})
    assert torch.allclose(lora(x), plain(x), atol=1e-5)
    B = adapter["base_model.model.l.lora_B.weight"]
    assert B.shape == ((6, 3, 1, 1) if isinstance(layer, nn.Conv2d) else (7, 3))  # peft's layout


def test_adapted_network_starts_as_its_base():
    """LoRA's B starts at zero and the new column at zero: old classes give the base's output exactly, the new
    class gives the base's unconditional output."""
    base = _base()
    net = build_model(preset("tiny", image_size=8, context_width=4))
    net.load_state_dict(widen(base.state_dict(), 1))
    adapt(net, 3, rank=2, alpha=None, seed=0)
    x, t, c = _inputs(3)
    with torch.no_grad():
        assert torch.equal(net(x, t, torch.cat([c, torch.zeros(4, 1)], 1)), base(x, t, c))
        new = torch.zeros(4, 4)
        new[:, 3] = 1
        assert torch.equal(net(x, t, new), base(x, t, None))
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B", "columns")) for n in trainable)
    assert len([n for n in trainable if n.endswith("lora_A")]) == len(lora_targets(base))


@pytest.mark.parametrize("method", ["lora", "column"])
def test_merge_gives_the_adapted_network_and_unmerge_the_base(method):
    base = _base()
    net = _adapted(base, method)
    adapter = adapter_tensors(net)
    merged = merge(base.state_dict(), adapter, scale=2.0)
    plain = build_model(preset("tiny", image_size=8, context_width=4))
    plain.load_state_dict(merged)
    x, t, _ = _inputs(4)
    c = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0.5, 1], [0, 0, 0, 0]]).float()
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x, t, c), net(x, t, c), atol=1e-5)
    back = unmerge(merged, adapter, scale=2.0)
    for key, value in base.state_dict().items():
        assert back[key].shape == value.shape and torch.allclose(back[key], value, atol=1e-6), key


def test_new_column_method_leaves_the_old_classes_exactly():
    """Training only the new column changes nothing the old classes (or the null context) see."""
    base = _base()
    net = build_model(preset("tiny", image_size=8, context_width=4))
    net.load_state_dict(widen(base.state_dict(), 1))
    adapt(net, 3, rank=None, alpha=None, seed=0)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=0.1)
    schedule, g = Schedule.linear(50), torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 3, 8, 8, generator=g) * 2 - 1
    c = torch.nn.functional.one_hot(torch.tensor([3, 3, 3, 3, 0, 1, 2, 3]), 4).float()
    for _ in range(3):
        loss = diffusion_loss(net, schedule, x0, c, p_uncond=0.1, prediction="v", generator=g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert net.context_mlp[0].columns.abs().sum() > 0
    x, t, old = _inputs(3)
    with torch.no_grad():
        assert torch.equal(net(x, t, torch.cat([old, torch.zeros(4, 1)], 1)), base(x, t, old))
        assert torch.equal(net(x, t, torch.zeros(4, 4)), base(x, t, None))


def test_adapter_tensors_are_checked():
    net = _adapted(_base(), "lora")
    adapter = adapter_tensors(net)
    check_adapter(adapter)
    with pytest.raises(KeyError, match="unexpected tensor"):
        check_adapter({**adapter, "down.0.weight": torch.zeros(1)})
    lonely = {k: v for k, v in adapter.items() if not k.endswith("stem.lora_A.weight")}
    with pytest.raises(KeyError, match="no lora_A partner"):
        check_adapter(lonely)


def test_adapter_section_of_the_model_file():
    good = {"base": "sprites", "base_sha256": "a" * 64, "method": "lora", "rank": 4, "alpha": 4.0,
            "new_classes": ["smiley"]}
    assert validate(good, ADAPTER, "adapter") == good and "adapter" in TOP
    for field, value, named in (("base_sha256", "A" * 64, "base_sha256"), ("method", "full", "method"),
                                ("rank", 0, "rank"), ("new_classes", ["a,b"], "new_classes")):
        with pytest.raises(UsageError, match=named):
            validate({**good, field: value}, ADAPTER, "adapter")
