"""Everything a training run is made of before its first step: its settings (a resume keeps the saved run's), the
data, the noise schedule and the network's configuration, the networks with their optimizer, and the run folder
made ready. ``train._train`` calls these in this order."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

import torch

from ..conditioning.dataset import caption_alternatives, dataset_contexts
from ..conditioning.spec import ContextSpec
from ..core.schedule import Schedule
from ..data.batches import as_tensor
from ..data.load import load_dataset
from ..errors import UsageError, bad_value
from ..models import ModelConfig, build_model, preset
from ..runtime import dist
from ..store.files import clean_stale_temps, write_json
from . import runlock
from .config import Objective, TrainConfig, describe, resumed_config
from .runlog import Notes
from .posthoc_ema import FOLDER, PowerEMAs
from .state import Networks, class_weights


@dataclass(frozen=True)
class Data:
    """The training set as the loop reads it."""

    dataset: Any  # data.sources.Dataset: its size, labels and class counts
    images: Any  # uint8 [N, 3, H, W]: a tensor in (GPU) memory, or a packed set's array read batch by batch
    contexts: torch.Tensor | None  # [N, D], one context row per image; None: unconditional
    spec: ContextSpec
    examples: list  # class names, or [index, caption] of the images whose rows the grids show
    weights: torch.Tensor | None  # per-image draw weights that balance the classes
    alternatives: tuple | None = None  # each image's alternative caption rows (conditioning.dataset), drawn per step
    held_out: int = 0  # images of the set kept out of training (its split), for measuring


def settings(config: TrainConfig, saved: dict | None, out: Path, info: dist.DistInfo, objective: Objective | None,
             note: Notes, given: Collection[str] | None = None) -> TrainConfig:
    """This call's settings, or on a resume the saved run's with this call's budget; then the default budget."""
    if saved is not None:
        config = resumed_config(saved["config"], config, str(out / "state.pt"), given)
        note(f"continuing with the run's settings: {describe(config)}")
        identity = saved.get("objective")
        if identity != (objective.identity if objective else None):
            raise UsageError(f"training state {out / 'state.pt'} belongs to another objective "
                             f"({identity or 'training'}); resume it with the settings it was started with")
        if saved["world"] != info.world:
            note(f"resuming a run of {saved['world']} process(es) on {info.world}: the global batch stays "
                 f"{config.batch_size} ({config.batch_size // info.world} per process); each process's random "
                 f"stream is derived from the seed, the step and its rank")
        if config.batch_size % info.world:
            raise bad_value("batch_size", config.batch_size, f"a multiple of the {info.world} processes")
    return config.with_budget()


def load_data(config: TrainConfig, info: dist.DistInfo) -> Data:
    """The training set, its context rows and the class-balancing weights, on the training device."""
    whole = load_dataset(config.data, labels=config.labels, class_names=list(config.class_names or []) or None,
                         size=config.image_size, skip_bad_files=config.skip_bad_files)
    dataset = whole.part(held_out=False)  # a set's held-out images (its split) are never trained on
    spec, contexts, examples = dataset_contexts(dataset, config.context, data=config.data, encoder=config.encoder,
                                                context_file=config.context_file, progress=config.progress,
                                                tokens=config.text_tokens)
    # uint8 [N, 3, H, W], the whole set in (GPU) memory; a packed set stays on disk, read batch by batch
    images = dataset.images if dataset.mapped else as_tensor(dataset.images).to(info.device)
    contexts = None if contexts is None else contexts.to(info.device)
    weights = class_weights(dataset.labels) if config.balance and dataset.labels is not None else None
    alternatives = caption_alternatives(dataset, spec, config.data, config.progress) if config.caption_alternatives \
        else None
    return Data(dataset, images, contexts, spec, examples, weights, alternatives, len(whole) - len(dataset))


def diffusion(config: TrainConfig, spec: ContextSpec, objective: Objective | None) -> tuple[Schedule, ModelConfig]:
    """The noise schedule and the network's configuration: from the settings, or the objective's (its teacher's)."""
    schedule = Schedule.linear(config.T) if config.schedule == "linear" else Schedule.cosine(config.T)
    zero_terminal = config.zero_terminal_snr if config.zero_terminal_snr is not None else config.prediction != "eps"
    schedule = schedule.rescale_zero_terminal_snr() if zero_terminal else schedule
    model_config = preset(config.model, image_size=config.image_size, context_width=spec.width, T=config.T,
                          context_tokens=spec.tokens)
    if objective is not None:
        if spec.to_dict() != objective.context:
            raise UsageError(f"the data {config.data!r} gives the context {spec.to_dict()}, but the network was "
                             f"trained on {objective.context}; pass the data it was trained on")
        schedule, model_config = objective.schedule, objective.model_config
    return schedule, model_config


def networks(config: TrainConfig, model_config: ModelConfig, info: dist.DistInfo,
             objective: Objective | None) -> Networks:
    """The network (random, or the objective's initial weights), its EMA copy, its wrapper and AdamW."""
    torch.manual_seed(config.seed)  # the initial weights
    adapted = objective is not None and objective.network is not None  # fine-tuning brings its own network
    model = (objective.network() if adapted else build_model(model_config)).to(info.device)
    if objective is not None:
        model.load_state_dict(objective.weights)
    if info.device.type == "cpu":
        # channels-last convolutions train as fast or faster on a CPU (16 px: equal in fp32; 32 px: 1.25× in fp32)
        # and let bf16 pay (32 px: 1.7× fp32's images/s, benchmarks/bf16.py); the weights' values are unchanged
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    net = dist.wrap(model, info)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    posthoc = PowerEMAs(model) if config.ema_snapshot_every else None
    return Networks(model, ema, net, optimizer, posthoc)


def open_folder(out: Path, mode: str, locks: list[runlock.RunLock], note: Notes, resolved: dict) -> None:
    """Rank 0 readies the run folder: an old run moved aside (``--overwrite``, now that the data has loaded), what a
    writer killed mid-write left removed, the resolved settings written."""
    if mode == "overwrite":
        locks.append(runlock.replace_run(out, locks[-1], note))
    for folder in (out, out / "model", out / "samples", out / FOLDER):
        clean_stale_temps(folder)  # we hold the lock: nobody else writes here
    write_json(out / "config.json", resolved)
