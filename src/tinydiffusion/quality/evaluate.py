"""Offline sample quality: ``evaluate(EvalConfig) -> dict`` (what ``tinydiffusion eval`` runs).

Samples a fixed, seeded number of images per class and scores them in the domain evaluator's
feature space: FD-domain (a Fréchet distance, not "FID": the features are not Inception's), KID,
precision/recall, conditional accuracy, and a memorisation check against the training images.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .. import checks
from ..core.samplers import get_sampler
from ..data.batches import as_tensor, make_batch
from ..data.load import load_dataset
from ..errors import UsageError, bad_value
from ..runtime import shard
from ..runtime.dist import DistInfo, agree
from ..sampling import card
from ..sampling.pipeline import Pipeline, load
from ..sampling.plans import SamplePlan, batch_bytes
from ..store.files import atomic_write, user_cache_dir, write_json
from ..store.pictures import grid, save_picture, to_uint8
from ..vocab import PRECISIONS
from . import metrics
from .featurenet import Evaluator, load_evaluator
from .prompts import prompt_following

BOOTSTRAPS = 20
MEMO_THRESHOLD = 0.1  # a copy: nearest training image closer than this RMS pixel distance in [-1, 1] units ...
MEMO_RATIO = 0.5  # ... and closer than this share of the mean distance to its 50 nearest training images


@dataclass(frozen=True)
class EvalConfig:
    model: str
    evaluator: str | None = None  # None: the shipped one of the model's data (sprites; emoji for a text model)
    data: str | None = None  # default: the data the model was trained on
    per_class: int = 200
    per_prompt: int = 8  # a text model: samples per prompt (held-out captions and paraphrases)
    sampler: str | None = None  # None (with steps and guidance): the model card's (recommended) settings
    steps: int | None = None
    guidance: float | None = None
    guidance_interval: tuple[float, float] | None = None  # None: the model card's (else everywhere)
    guide: str | None = None  # autoguidance's guide model; None: the model card's; "none": none
    guide_scale: float | None = None  # the guide beside classifier-free guidance, at this scale; None: the card's
    snap: float | None = None  # text: move each prompt toward its nearest training caption (0–1); None: the card's
    seed: int = 1000  # far from the seeds of the training grids
    batch_size: int = 128
    precision: str = "fp32"  # "bf16" autocasts the network while sampling
    memorisation_threshold: float = MEMO_THRESHOLD
    memorisation_ratio: float = MEMO_RATIO
    out: str = "eval.json"
    device: str = "auto"

    def __post_init__(self) -> None:
        """Every setting that needs no model is checked here, so the library refuses what the CLI refuses."""
        check_sampling_settings(self)
        if self.snap is not None:
            checks.snap(self.snap)
        if self.sampler is not None:
            get_sampler(self.sampler, {})
        if self.steps is not None:
            checks.integer("steps", self.steps, low=1, allowed="a positive integer (at most the model's T)")
        checks.finite("memorisation_threshold", self.memorisation_threshold, low=0,
                      allowed="a finite RMS pixel distance >= 0 in [-1, 1] units")
        checks.finite("memorisation_ratio", self.memorisation_ratio, low=0, high=1, low_open=True,
                      allowed="a fraction in (0, 1] of the mean distance to the 50 nearest training images")
        checks.output_path("out", self.out, suffixes=(".json",))


def check_sampling_settings(config) -> None:
    """The settings ``EvalConfig`` and ``CompareConfig`` share: model, evaluator, data, counts, seeds, precision."""
    for key in ("model", "evaluator"):
        value = getattr(config, key)
        if (value is not None or key == "model") and (not isinstance(value, (str, Path)) or not str(value).strip()):
            raise bad_value(key, value, "a shipped name or a folder")
    if config.data is not None and (not isinstance(config.data, (str, Path)) or not str(config.data).strip()):
        raise bad_value("data", config.data, "a data set name or path, or None (the model's training data)")
    per_class = checks.integer("per_class", config.per_class, low=2, high=checks.MAX_SEED,
                               allowed="an integer >= 2 (a covariance needs two samples per class)")
    checks.seed("seed", config.seed, per_class)
    if config.guidance is not None:  # None: the model card's
        checks.guidance(config.guidance)
    if config.guidance_interval is not None:
        checks.guidance_interval(config.guidance_interval)
    if config.guide is not None and (not isinstance(config.guide, (str, Path)) or not str(config.guide).strip()):
        raise bad_value("guide", config.guide, "a model folder or a shipped name ('none': no guide), or None")
    if config.guide_scale is not None:
        checks.guidance(config.guide_scale, "guide_scale")
    checks.integer("batch_size", config.batch_size, low=1, allowed="a positive number of images per forward pass")
    checks.choice("precision", config.precision, PRECISIONS)
    if not isinstance(config.device, str):
        raise bad_value("device", config.device, "'auto', 'cpu', 'cuda' or 'cuda:N'")


def check_class_model(pipe: Pipeline, ev: Evaluator, command: str) -> None:
    """Scoring per class needs a class-conditional model whose classes are the evaluator's."""
    if pipe.context.kind != "class":
        raise UsageError(f"{command} needs a class-conditional model (this one's context is {pipe.context.kind!r}): "
                         f"conditional accuracy is measured per class")
    if tuple(ev.class_names) != tuple(pipe.context.names):
        raise UsageError(f"evaluator classes {list(ev.class_names)} differ from the model's {list(pipe.context.names)}; "
                         f"train an evaluator on the model's data: tinydiffusion evaluator train --data …")


def check_memory(pipe: Pipeline, plan: SamplePlan, ev: Evaluator, value: int, info: DistInfo) -> None:
    """Refuse ``per_class`` before any work when the samples and their scoring would not fit in memory:
    the float samples (twice on rank 0 under torchrun: the gathered pickles), their flattened copy for
    the memorisation check, and the evaluator's features (float64, with bootstrap copies)."""
    features = 128 * int(ev.config.get("members", 1))
    per_image = plan.image_bytes * (2 + (info.world > 1)) + features * 8 * 3
    checks.memory("per_class", value, plan.count * per_image + batch_bytes(pipe, plan),
                  f"{plan.count} samples and their scores")


@dataclass(eq=False)
class RealReference:
    features: torch.Tensor  # [N, F]
    labels: torch.Tensor  # [N]
    images: torch.Tensor  # uint8 [N, 3, H, W] at the model's size


def real_reference(evaluator: Evaluator, data: str, size: int) -> RealReference:
    """Evaluator features of the real images at the model's resolution, cached on disk."""
    dataset = load_dataset(data, size=size)
    if dataset.labels is None:
        raise UsageError(f"data {data!r} has no labels: evaluation needs the class of each real image")
    images = as_tensor(dataset.images)
    weights = json.dumps(evaluator.config.get("holdout_accuracy", {}), sort_keys=True) + str(evaluator.config)
    key = hashlib.sha256(images.numpy().tobytes() + weights.encode()).hexdigest()[:16]
    path = user_cache_dir() / f"reference-{Path(str(data)).name}-{size}-{key}.npy"
    try:
        features = torch.from_numpy(np.load(path)).double()
    except (OSError, ValueError):
        features, _ = evaluator.run(make_batch(images, torch.arange(len(images))))
        try:  # atomic: another eval may read the cache while this one writes it
            atomic_write(path, lambda f: np.save(f, features.numpy()))
        except (OSError, UsageError):
            pass  # an unwritable cache only costs time
    return RealReference(features, torch.from_numpy(dataset.labels), images)


def score(samples: torch.Tensor, labels: torch.Tensor, evaluator: Evaluator, real: RealReference,
          threshold: float = MEMO_THRESHOLD, ratio: float | None = MEMO_RATIO,
          generator: torch.Generator | None = None) -> dict:
    """Every metric of ``samples`` ``[N, 3, H, W]`` in ``[-1, 1]`` generated for classes ``labels``."""
    feats, logits = evaluator.run(samples)
    g = generator or torch.Generator().manual_seed(0)
    fd = metrics.frechet_distance(feats, real.features)
    boot = [metrics.frechet_distance(feats[torch.randint(0, len(feats), (len(feats),), generator=g)], real.features)
            for _ in range(BOOTSTRAPS)]
    kid_mean, kid_std = metrics.kid(feats, real.features, subsets=50, subset_size=min(1000, len(feats)), generator=g)
    precision, recall = metrics.precision_recall(real.features, feats, k=3)
    flat = samples.reshape(len(samples), -1)
    train_flat = make_batch(real.images, torch.arange(len(real.images))).reshape(len(real.images), -1)
    rms = float(flat.shape[1]) ** 0.5  # Euclidean distance / sqrt(pixels) = RMS pixel distance
    memo = metrics.memorisation(flat / rms, train_flat / rms, threshold=threshold, ratio=ratio)
    return {"fd_domain": fd, "fd_domain_bootstrap_std": float(np.std(boot)), "kid": kid_mean, "kid_std": kid_std,
            "precision": precision, "recall": recall,
            "conditional_accuracy": metrics.conditional_accuracy(logits, labels),
            "memorised_share": memo["share"], "_memo": memo}


def evaluate(config: EvalConfig, pipeline: Pipeline | None = None, evaluator: Evaluator | None = None) -> dict:
    """Sample ``per_class`` images per class, score them, write the JSON report and the closest-pairs grid.
    Under torchrun the ranks share the batches; rank 0 scores and writes, and every rank returns the report."""
    with shard.processes(config.device) as info:
        return _evaluate(config, pipeline, evaluator, info)


def _evaluate(config: EvalConfig, pipeline: Pipeline | None, evaluator: Evaluator | None, info: DistInfo) -> dict:
    pipe = pipeline or load(config.model, device=info.device)
    data = config.data or pipe.config.get("training", {}).get("data", "sprites")
    ev = evaluator or load_evaluator(config.evaluator or (data if pipe.context.kind == "text" else "sprites"))
    if pipe.context.kind == "text":
        return _evaluate_prompts(config, pipe, ev, data, info)
    check_class_model(pipe, ev, "eval")
    sampler, steps, guidance = pipe.resolve(config.sampler, config.steps, config.guidance)
    plan = pipe.plan(list(pipe.context.names), n=config.per_class, seed=config.seed, sampler=sampler,
                     steps=steps, guidance=guidance, guidance_interval=config.guidance_interval, guide=config.guide,
                     guide_scale=config.guide_scale, snap=config.snap, batch_size=config.batch_size,
                     precision=config.precision)  # snap: refused by name on a class model, never ignored
    check_memory(pipe, plan, ev, config.per_class, info)
    found: list[RealReference] = []  # rank 0 reads the real data; a refusal there is every rank's (all exit 2)
    agree(lambda: found.append(real_reference(ev, data, pipe.image_size)), info)
    real = found[0] if found else None
    t0 = time.perf_counter()
    samples = shard.sample(pipe, plan, info)
    seconds = time.perf_counter() - t0
    report = None
    if info.is_main:
        labels = torch.arange(len(pipe.context.names)).repeat_interleave(config.per_class)
        result = score(samples, labels, ev, real, config.memorisation_threshold, config.memorisation_ratio)
        memo = result.pop("_memo")
        report = {"model": str(config.model), "data": data, "samples": len(samples), **result,
                  "seconds": round(seconds, 2), "images_per_second": round(len(samples) / seconds, 2),
                  "evaluator_holdout_accuracy": ev.accuracy,
                  "settings": {**asdict(config), "sampler": sampler, "steps": steps, "guidance": guidance,
                               **plan.levers}}
        out = Path(config.out)
        _closest_pairs_grid(samples, real.images, memo, out.with_name(out.stem + "_closest.png"))
        write_json(out, report)  # last: a report on disk means its grid is there too
    return shard.broadcast(report, info)


def _evaluate_prompts(config: EvalConfig, pipe: Pipeline, ev: Evaluator, data: str, info: DistInfo) -> dict:
    """A text model: prompt following (``prompts.py``) on held-out captions and paraphrases, beside the ceilings."""
    checks.integer("per_prompt", config.per_prompt, low=1, high=10_000, allowed="an integer number of samples in 1..10000")
    sampler, steps, guidance = pipe.resolve(config.sampler, config.steps, config.guidance)
    t0 = time.perf_counter()
    found = prompt_following(pipe, ev, data, info, per_prompt=config.per_prompt, seed=config.seed, sampler=sampler,
                             steps=steps, guidance=guidance, guidance_interval=config.guidance_interval,
                             guide=config.guide, guide_scale=config.guide_scale, snap=config.snap,
                             batch_size=config.batch_size, precision=config.precision)
    report = None
    if info.is_main:
        seconds = time.perf_counter() - t0
        report = {"model": str(config.model), "data": data, "prompt_following": found, "seconds": round(seconds, 2),
                  "evaluator_holdout_accuracy": ev.accuracy,
                  "settings": {**asdict(config), "sampler": sampler, "steps": steps, "guidance": guidance,
                               "snap": card.snap(pipe.config, config.snap)}}
        write_json(Path(config.out), report)
    return shard.broadcast(report, info)


def _closest_pairs_grid(samples: torch.Tensor, train_images: torch.Tensor, memo: dict, path: Path, k: int = 8) -> None:
    """Two rows: the ``k`` samples nearest to a training image, and those training images."""
    idx = metrics.nearest_pairs(memo, min(k, len(samples)))
    top = to_uint8(samples[idx])
    bottom = train_images[memo["nearest"][idx]].permute(0, 2, 3, 1).numpy()
    scale = max(1, 64 // top.shape[1])
    save_picture(path, grid(np.concatenate([top, bottom]), len(idx), scale=scale), format="PNG")
