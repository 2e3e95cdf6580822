"""``tinydiffusion export MODEL --format onnx --out DIR``: the network as ``model.onnx`` beside the model's files.

DIR gets ``model.onnx`` (the network, ``model(x_t, t, context)`` with a dynamic batch size and the model-spec keys
and ``config.json`` in its metadata), ``config.json``, ``model.safetensors`` (the same tensors, model-spec keys in
the header), the card ``README.md`` and ``scheduler_config.json``. ``td.load(DIR)`` and ``tinydiffusion sample
DIR`` then run the network through onnxruntime (``models/onnxnet.py``). Before anything is written the graph is
run against the PyTorch network (``parity``): a graph that computes something else is never exported.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError, bad_value
from ..models.onnxnet import ONNX_FILE, PARITY_TOLERANCE, OnnxNetwork, output_difference, to_onnx
from ..sampling.pipeline import Pipeline, load, resolve_model
from ..store.checkpoint import CONFIG, WEIGHTS
from ..store.files import AtomicFolder, write_bytes
from ..store.pictures import to_uint8
from . import hub

README, SCHEDULER = "README.md", "scheduler_config.json"


@dataclass(frozen=True)
class ExportResult:
    out: Path
    files: tuple[str, ...]  # what the folder holds, relative to it
    max_difference: float  # of the network's outputs, onnxruntime against PyTorch (parity)
    seconds: float
    notes: tuple[str, ...] = ()  # what the export decided that was not asked (said by the CLI)


def export_onnx(model: str | Path, out: str | Path, *, overwrite: bool = False,
                license: str | None = None) -> ExportResult:
    """Write the ONNX folder of ``model`` (a shipped name or a model folder) to ``out``; see the module doc."""
    t0 = time.perf_counter()
    target = check_out(out, overwrite)
    pipe, source = load_source(model)
    title = hub.title_of(pipe.config, source.name)
    graph = network_graph(pipe, title, license)
    difference = parity(pipe, graph)
    files = {ONNX_FILE: graph, **interop_files(pipe, source, title, license, with_weights=True)}
    write_folder(target, files)
    return ExportResult(target, tuple(sorted(files)), difference, time.perf_counter() - t0)


def check_out(out: Any, overwrite: bool) -> Path:
    """The output folder: new or empty; with ``overwrite`` also a folder a previous export wrote (it holds
    ``config.json`` and ``model.onnx``), never any other folder or a file."""
    if not isinstance(out, (str, Path)) or not str(out).strip():
        raise bad_value("out", out, "a folder to write the export into")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise bad_value("out", str(out), "a folder (new or empty); this is a file")
    if path.is_dir() and any(path.iterdir()):
        ours = (path / CONFIG).is_file() and (path / ONNX_FILE).is_file()
        if not overwrite:
            raise bad_value("out", str(out), "a new or empty folder; this one holds files (--overwrite replaces a "
                                             "previous export)")
        if not ours:
            raise bad_value("out", str(out), "a new or empty folder, or a previous export to --overwrite; this "
                                             f"folder holds files but no {CONFIG} and {ONNX_FILE}")
    return path


def load_source(model: Any) -> tuple[Pipeline, Path]:
    """The model to export, loaded with its PyTorch network, and its folder."""
    pipe = load(model, backend="torch")
    return pipe, resolve_model(model)


def network_graph(pipe: Pipeline, title: str, license: str | None) -> bytes:
    """``to_onnx`` of the pipeline's network, with the model-spec keys and ``config.json`` as ONNX metadata."""
    import onnx

    m = pipe.config["model"]
    graph = to_onnx(pipe.model, m["channels"], m["image_size"], m["context_width"])
    proto = onnx.load_from_string(graph)
    props = {**hub.modelspec(pipe.config, title, license), "tinydiffusion.config": json.dumps(pipe.config)}
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = hub.description(pipe.config)
    return proto.SerializeToString()


def parity(pipe: Pipeline, graph: bytes) -> float:
    """Max abs difference of the graph's outputs from the network's on three seeded batches (1, 3 and 8 images);
    refused (``UsageError``) above ``PARITY_TOLERANCE``."""
    m = pipe.config["model"]
    network = OnnxNetwork(graph)
    difference = max(output_difference(pipe.model, network, m["channels"], m["image_size"], m["context_width"],
                                       batch=b, seed=b) for b in (1, 3, 8))
    if not difference <= PARITY_TOLERANCE:
        raise UsageError(f"the exported graph's outputs differ from PyTorch's by {difference:.3g} (allowed "
                         f"{PARITY_TOLERANCE:g}); this network does not export faithfully with this torch and "
                         f"onnxruntime")
    return difference


def interop_files(pipe: Pipeline, source: Path, title: str, license: str | None,
                  with_weights: bool, extra: tuple[str, ...] = ()) -> dict[str, bytes]:
    """``config.json`` (as it is), ``README.md``, ``scheduler_config.json`` and, ``with_weights``, the
    ``model.safetensors`` with model-spec metadata: the files every export and shipped folder carries."""
    old = (source / README).read_text(encoding="utf-8") if (source / README).is_file() else ""
    old_license = hub.split_front_matter(old)[0].get("license")
    license = license or old_license
    names = (ONNX_FILE, CONFIG, README, SCHEDULER, *extra) + ((WEIGHTS,) if with_weights else ())
    files = {CONFIG: (source / CONFIG).read_bytes(),
             README: hub.card(pipe.config, title, old, license, names).encode(),
             SCHEDULER: (json.dumps(hub.scheduler_config(pipe.config), indent=2) + "\n").encode()}
    if with_weights:
        meta = hub.modelspec(pipe.config, title, license or hub.DEFAULT_LICENSE)
        files[WEIGHTS] = hub.safetensors_with_metadata((source / WEIGHTS).read_bytes(), meta)
    return files


def write_folder(target: Path, files: dict[str, bytes]) -> None:
    """All ``files`` (name relative to ``target`` -> bytes) appear at once: built in a hidden sibling, then renamed."""
    with AtomicFolder(target) as tmp:
        for name, data in files.items():
            write_bytes(tmp / name, data)


@torch.no_grad()
def image_parity(a: Pipeline, b: Pipeline, context: Any = None, n: int = 4, seed: int = 0,
                 **settings: Any) -> dict[str, float]:
    """Images of two pipelines from the same seeds and settings (default: the card's): the max abs difference in
    uint8 levels of the written images and of the float images scaled to levels (``x · 127.5``)."""
    x = a.sample(context, n=n, seed=seed, **settings)
    y = b.sample(context, n=n, seed=seed, **settings)
    levels = np.abs(to_uint8(x).astype(np.int16) - to_uint8(y).astype(np.int16)).max()
    return {"uint8": float(levels), "float": float((x - y).abs().max()) * 127.5, "images": int(x.shape[0])}
