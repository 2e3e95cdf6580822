"""An adapter folder on disk: what ``finetune`` exports for its adapter methods, and how ``load`` merges it.

The folder is an exported model folder like any other (``config.json`` + ``model.safetensors``), so everything
that lists, caches or loads models handles it unchanged; its ``config.json`` describes the adapted network (its
context with the new classes, the base's schedule and settings) and holds an ``adapter`` section naming the base
model and the sha256 of the base's ``model.safetensors``; its ``model.safetensors`` holds only what the adapter
learnt (``adapters.adapter_tensors``: new context columns, LoRA factors under peft's key names), a few hundred
kilobytes. Loading needs no peft: the low-rank updates are merged into the base's weights here (``adapters.merge``).
The base's files are only read, never written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import UsageError
from ..store.checkpoint import CONFIG, WEIGHTS, export_model, read_model
from ..store.modelfile import MODEL_FORMAT
from .adapters import adapter_tensors, check_adapter, merge

MAX_CHAIN = 8  # an adapter of an adapter of …: deeper chains are refused (and a folder that names itself)


def weights_sha256(folder: str | Path) -> str:
    """sha256 of a model folder's ``model.safetensors``: what an adapter records of its base."""
    digest = hashlib.sha256()
    with open(Path(folder) / WEIGHTS, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Tensors:
    """The adapter's tensors in the shape ``export_model`` writes (anything with a ``state_dict``)."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.tensors


def export_adapter(directory: str | Path, network: torch.nn.Module, card: dict[str, Any]) -> Path:
    """Write an adapted network's adapter (not its base weights) with its ``card``, as ``export_model`` writes a
    model: ``config.json`` checked first, each file atomically."""
    return export_model(directory, _Tensors(adapter_tensors(network)), card)


def merge_adapter(path: Path, config: dict[str, Any], weights: dict[str, torch.Tensor],
                  resolve: Callable[[str], Path], depth: int = 0) -> dict[str, torch.Tensor]:
    """The full weights of the adapter folder ``path`` (its ``config`` and ``weights`` already read and checked by
    ``read_model``): its base's weights, read only after their sha256 matches the record, with the adapter merged
    in. ``resolve`` turns the recorded base (a shipped name or a folder) into its folder; a base that is itself an
    adapter is merged first."""
    record = config["adapter"]
    base = resolve(record["base"])
    where = f"adapter {path}"
    if depth >= MAX_CHAIN or (base.exists() and base.resolve() == Path(path).resolve()):
        raise UsageError(f"{where}: its base {record['base']!r} leads back to itself or past {MAX_CHAIN} adapters; "
                         f"expected a chain of adapters that ends at an ordinary model")
    if not (base / WEIGHTS).is_file() or not (base / CONFIG).is_file():
        raise UsageError(f"{where} was made for the base model {record['base']!r}, which is not there (no "
                         f"{CONFIG} and {WEIGHTS} in {base}); put the base back at that path, or fine-tune again")
    found = weights_sha256(base)
    if found != record["base_sha256"]:
        raise UsageError(f"{where} was made for the base {record['base']!r} with weights sha256 "
                         f"{record['base_sha256'][:16]}…, but {base / WEIGHTS} now has {found[:16]}… (the base "
                         f"changed since the fine-tune); use the base it was made for, or fine-tune again")
    base_config, base_weights = read_model(base, expect=MODEL_FORMAT)
    if "adapter" in base_config:
        base_weights = merge_adapter(base, base_config, base_weights, resolve, depth + 1)
    _check_same_network(where, config, base_config)
    scale = float(record.get("alpha", 1.0)) / int(record.get("rank", 1))
    try:
        check_adapter(weights)
        return merge({k: v.float() if v.is_floating_point() else v for k, v in base_weights.items()},
                     {k: v.float() for k, v in weights.items()}, scale)
    except (KeyError, ValueError, RuntimeError) as e:
        raise UsageError(f"{where}: {WEIGHTS} does not fit its base {record['base']!r}: {str(e)[:300]}") from None


def _check_same_network(where: str, config: dict[str, Any], base: dict[str, Any]) -> None:
    """An adapter changes the network's weights and its context's width, never its shape or its schedule."""
    mine = {k: v for k, v in config["model"].items() if k != "context_width"}
    theirs = {k: v for k, v in base["model"].items() if k != "context_width"}
    for what, a, b in (("model", mine, theirs), ("schedule", config["schedule"], base["schedule"]),
                       ("prediction", config.get("prediction", "eps"), base.get("prediction", "eps"))):
        if a != b:
            raise UsageError(f"{where}: its {what} ({a}) differs from its base's ({b}); expected the base's network, "
                             f"schedule and prediction with the adapter's context only")


def compose(adapters: list[tuple[str | Path, float]], out: str | Path) -> Path:
    """One adapter folder ``out`` from several adapter folders made on the same base, each with a ``weight``: their
    new classes side by side (each column as learnt) and their LoRA updates summed, each scaled by its weight. The
    sum stays exact and low-rank by stacking the factors (``A`` along the rank, ``B`` pre-scaled by
    ``weight·alpha/r``; recorded with scale 1). It loads like any adapter; docs/finetune.md says how well it works."""
    read = []
    for folder, weight in adapters:
        config, tensors = read_model(folder, expect=MODEL_FORMAT)
        if "adapter" not in config:
            raise UsageError(f"model {folder} is not an adapter (no 'adapter' in its {CONFIG}); only the adapter "
                             f"methods (lora, column) make folders that compose")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not abs(weight) <= 100:
            raise UsageError(f"weight={weight!r} of adapter {folder} is not allowed: expected a finite number in "
                             f"[-100, 100]")
        read.append((Path(folder), config, tensors, float(weight)))
    return _compose(read, out)


def _compose(adapters: list[tuple[Path, dict[str, Any], dict[str, torch.Tensor], float]], out: str | Path) -> Path:
    first = adapters[0][1]
    record = first["adapter"]
    names = list(first["context"]["names"][:first["context"]["width"] - len(record.get("new_classes", []))])
    columns, pairs = [], {}
    for folder, config, tensors, weight in adapters:
        a = config["adapter"]
        if (a["base"], a["base_sha256"]) != (record["base"], record["base_sha256"]) or \
                config["context"]["kind"] != first["context"]["kind"]:
            raise UsageError(f"adapter {folder} was made for {a['base']!r} ({a['base_sha256'][:12]}…), not for "
                             f"{record['base']!r} ({record['base_sha256'][:12]}…); adapters compose on one base")
        _check_same_network(f"adapter {folder}", config, first)
        clash = sorted(set(names) & set(a.get("new_classes", [])))
        if clash:
            raise UsageError(f"adapter {folder} adds the class {clash[0]!r} another one has; expected distinct names")
        names += a.get("new_classes", [])
        scale = weight * float(a.get("alpha", 1.0)) / int(a.get("rank", 1))
        for key, value in sorted(tensors.items()):
            if key.endswith(".lora_A.weight"):
                layer = key[:-len(".lora_A.weight")]
                A, B = pairs.setdefault(layer, ([], []))
                A.append(value.float())
                B.append(scale * tensors[f"{layer}.lora_B.weight"].float())
            elif not key.endswith(".lora_B.weight"):
                columns.append(value.float())
    merged = {f"{layer}.lora_A.weight": torch.cat(A) for layer, (A, _) in pairs.items()}
    merged.update({f"{layer}.lora_B.weight": torch.cat(B, dim=1) for layer, (_, B) in pairs.items()})
    if columns:
        merged[next(k for _, _, t, _ in adapters for k in t if k.startswith("new_columns."))] = torch.cat(columns, 1)
    rank = max([v.shape[0] for k, v in merged.items() if k.endswith("lora_A.weight")], default=1)
    config = {**first, "model": {**first["model"], "context_width": len(names) if columns else
                                 first["model"]["context_width"]},
              "context": {**first["context"], **({"names": names, "width": len(names)} if columns else {})},
              "examples": names if columns else first.get("examples", []),
              "adapter": {**record, "method": "lora" if pairs else "column", "rank": rank, "alpha": float(rank),
                          "new_classes": names[len(names) - sum(len(c["adapter"].get("new_classes", []))
                                                                for _, c, _, _ in adapters):]},
              "training": {"composed": [{"adapter": str(f), "weight": w} for f, _, _, w in adapters]}}
    return export_model(out, _Tensors(merged), config)
