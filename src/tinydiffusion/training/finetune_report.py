"""The honest report at the end of every fine-tune: is the new concept recognisable, do its samples copy the given
pictures, and what happened to the old classes.

- **Recognised**: a sample of the new concept is recognised when its nearest picture (RMS pixel distance) among
  the concept's reference pictures *and* the base's real training images is one of the concept's. The reference
  is the held-out pictures when given (``--holdout``; scored the same way, leaving each out in turn, they give the
  ceiling), else the given pictures themselves (then a copy counts as recognised: read it beside the near-copy
  share). The same rule in the domain evaluator's features is reported beside it: a domain evaluator knows its
  own classes, and a concept outside them lands among them (docs/finetune.md measures both).
- **Near copies**: the share of those samples closer to one of the given pictures than ``MEMO_THRESHOLD`` (RMS
  pixel distance) and than ``MEMO_RATIO`` × the mean distance to all of them: ``eval``'s memorisation check.
- **Old classes** (a class model whose classes the evaluator knows): conditional accuracy and FD-domain of the old
  classes' samples before (the base; cached) and after, from the same seeds and the model card's settings.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.batches import as_tensor, make_batch
from ..data.sources import Dataset
from ..quality import metrics
from ..quality.evaluate import MEMO_RATIO, MEMO_THRESHOLD, real_reference
from ..quality.featurenet import Evaluator, load_evaluator
from ..sampling.pipeline import Pipeline, load
from ..store.files import user_cache_dir, write_json, write_text
from ..store.pictures import grid, save_picture, to_uint8
from .finetune_data import Concept

MAX_REAL = 20_000  # the base's training images the recognition is measured against (a seeded subset of a larger set)


@dataclass(frozen=True)
class Measure:
    """How the report samples and scores."""

    samples: int  # per class (the new one and each old one)
    seed: int  # of the first sample; far from the training grids' seeds
    evaluator: str  # the domain evaluator (a shipped name or folder)
    batch_size: int = 64


def report(out: Path, model_dir: Path, base: Pipeline, base_sha256: str, concept: Concept, holdout: Concept | None,
           row: str, real: Dataset, data_name: str, measure: Measure) -> dict[str, Any]:
    """Measure the fine-tuned model in ``model_dir`` against ``base`` (``row``: the context that draws the concept,
    its class name or prompt; ``real``: the base's training data) and write ``OUT/report.json``, ``report.md`` and
    ``report.png``. Returns the report."""
    t0 = time.perf_counter()
    pipe, ev = load(model_dir), load_evaluator(measure.evaluator)
    sampler, steps, guidance = pipe.resolve(None, None, None)
    settings = {"sampler": sampler, "steps": steps, "guidance": guidance}
    x = pipe.sample([row], n=measure.samples, seed=measure.seed, batch_size=measure.batch_size, **settings)
    reference = holdout or concept
    ref = make_batch(as_tensor(reference.images), torch.arange(len(reference.images)))
    real_images = _real_images(real)
    taught = make_batch(as_tensor(concept.images), torch.arange(len(concept.images)))
    memo = metrics.memorisation(_flat(x), _flat(taught), threshold=MEMO_THRESHOLD, ratio=MEMO_RATIO)
    feats, ref_feats = ev.run(x)[0], ev.run(ref)[0]
    real_feats = _real_features(ev, real, data_name, pipe.image_size)
    result = {"concept": row, "samples": measure.samples, "seed": measure.seed, "sampling": settings,
              "evaluator": measure.evaluator,
              "recognised": recognised(_flat(x), _flat(ref), _flat(real_images)),
              "recognised_reference": f"{'held-out' if holdout else 'given'} pictures ({len(reference.images)})",
              "recognised_ceiling": ceiling(_flat(ref), _flat(real_images)) if holdout else None,
              "recognised_features": recognised(feats, ref_feats, real_feats),
              "recognised_features_ceiling": ceiling(ref_feats, real_feats) if holdout else None,
              "real_images": len(real_images),
              "near_copies": memo["share"], "near_copy_rule": f"RMS < {MEMO_THRESHOLD} and < {MEMO_RATIO} × the mean "
                                                              f"distance to the {len(concept.images)} given pictures",
              "old_classes": _old_classes(pipe, base, base_sha256, ev, real_feats, settings, measure)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    _grid(out / "report.png", x, concept.images[memo["nearest"].numpy()])
    write_text(out / "report.md", "\n".join(["# Fine-tune report", "", *lines(result), ""]))
    write_json(out / "report.json", result)
    return result


def recognised(samples: torch.Tensor, concept: torch.Tensor, real: torch.Tensor) -> float:
    """Share of ``samples`` (features) whose nearest neighbour among ``concept`` and ``real`` is a ``concept`` row."""
    nearest = torch.cdist(samples, torch.cat([concept, real])).argmin(dim=1)
    return float((nearest < len(concept)).double().mean())


def ceiling(concept: torch.Tensor, real: torch.Tensor) -> float:
    """``recognised`` of the concept's own pictures, each against the others (left out of its own reference)."""
    d = torch.cdist(concept, torch.cat([concept, real]))
    d[torch.arange(len(concept)), torch.arange(len(concept))] = torch.inf
    return float((d.argmin(dim=1) < len(concept)).double().mean())


def _flat(x: torch.Tensor) -> torch.Tensor:
    """Images ``[N, 3, H, W]`` as rows whose Euclidean distance is the RMS pixel distance (``[-1, 1]`` units)."""
    return x.reshape(len(x), -1).double() / float(x[0].numel()) ** 0.5


def _real_images(real: Dataset) -> torch.Tensor:
    """The base's training images as floats, at most ``MAX_REAL`` of them (a seeded choice from a larger set)."""
    idx = np.arange(len(real)) if len(real) <= MAX_REAL else \
        np.sort(np.random.default_rng(0).choice(len(real), MAX_REAL, replace=False))
    return make_batch(as_tensor(np.asarray(real.images[idx])), torch.arange(len(idx)))


def _real_features(ev: Evaluator, real: Dataset, data_name: str, size: int) -> torch.Tensor:
    """The evaluator's features of the base's training images (cached on disk for a labelled set)."""
    if real.labels is not None and not real.mapped and real.size == size:
        return real_reference(ev, data_name, size).features
    images = as_tensor(np.asarray(real.images))
    return ev.run(make_batch(images, torch.arange(len(images))))[0]


def _old_classes(pipe: Pipeline, base: Pipeline, base_sha256: str, ev: Evaluator, real: torch.Tensor,
                 settings: dict, measure: Measure) -> dict[str, Any]:
    """Conditional accuracy and FD-domain of the base's classes before and after, or why they were not measured."""
    if base.context.kind != "class":
        return {"measured": False, "reason": f"a {base.context.kind} model has no classes to score"}
    if tuple(ev.class_names) != tuple(base.context.names):
        return {"measured": False, "reason": f"the evaluator {measure.evaluator!r} knows the classes "
                                             f"{list(ev.class_names)}, not the base's {list(base.context.names)}"}
    names = list(base.context.names)
    labels = torch.arange(len(names)).repeat_interleave(measure.samples)
    key = hashlib.sha256(json.dumps([base_sha256, settings, measure.samples, measure.seed, str(ev.config)],
                                    sort_keys=True).encode()).hexdigest()[:16]
    cache = user_cache_dir() / f"finetune-before-{key}.json"
    before = _read_cache(cache)
    if before is None:
        before = _score(base, names, labels, ev, real, settings, measure)
        try:
            write_json(cache, before)
        except OSError:
            pass  # an unwritable cache only costs time
    after = _score(pipe, names, labels, ev, real, settings, measure)
    return {"measured": True, "per_class": measure.samples, "accuracy_before": before["accuracy"],
            "accuracy_after": after["accuracy"], "fd_domain_before": before["fd_domain"],
            "fd_domain_after": after["fd_domain"], "per_class_accuracy_before": before["per_class"],
            "per_class_accuracy_after": after["per_class"]}


def _score(pipe: Pipeline, names: list[str], labels: torch.Tensor, ev: Evaluator, real: torch.Tensor,
           settings: dict, measure: Measure) -> dict[str, Any]:
    x = pipe.sample(names, n=measure.samples, seed=measure.seed, batch_size=measure.batch_size, **settings)
    feats, logits = ev.run(x)
    hit = (logits.argmax(dim=1) == labels).double()
    return {"accuracy": metrics.conditional_accuracy(logits, labels), "fd_domain": metrics.frechet_distance(feats, real),
            "per_class": {n: float(hit[labels == k].mean()) for k, n in enumerate(names)}}


def _read_cache(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and {"accuracy", "fd_domain", "per_class"} <= set(value) else None


def _grid(path: Path, samples: torch.Tensor, nearest: np.ndarray, k: int = 8) -> None:
    """Two rows: the first ``k`` samples of the new concept, and the given picture nearest to each."""
    top = to_uint8(samples[:k])
    pictures = np.concatenate([top, nearest[:k]])
    save_picture(path, grid(pictures, len(top), scale=max(1, 64 // top.shape[1])), format="PNG")


def lines(r: dict[str, Any]) -> list[str]:
    """The report as lines of text (printed at the end of a fine-tune and written to ``report.md``)."""
    s = r["sampling"]
    out = [f"- new concept {r['concept']!r}: {r['samples']} samples ({s['sampler']}, {s['steps']} steps, guidance "
           f"{s['guidance']:g}; seeds {r['seed']}…), scored with the evaluator {r['evaluator']!r}",
           f"- recognised: {r['recognised']:.0%} (its nearest picture, by RMS pixel distance, among the "
           f"{r['recognised_reference']} and {r['real_images']:,} of the base's training images is the concept's"
           + (f"; ceiling {r['recognised_ceiling']:.0%}, the held-out pictures scored the same way)"
              if r["recognised_ceiling"] is not None else "; pass --holdout pictures for an unbiased figure)")
           + f"; in the evaluator's features: {r['recognised_features']:.0%}"
           + (f" (ceiling {r['recognised_features_ceiling']:.0%})" if r["recognised_features_ceiling"] is not None
              else ""),
           f"- near copies of the given pictures: {r['near_copies']:.0%} ({r['near_copy_rule']})"]
    old = r["old_classes"]
    if old["measured"]:
        out.append(f"- old classes ({old['per_class']} samples each): conditional accuracy {old['accuracy_before']:.1%} "
                   f"before, {old['accuracy_after']:.1%} after ({100 * (old['accuracy_after'] - old['accuracy_before']):+.1f} "
                   f"points); FD-domain {old['fd_domain_before']:.2f} before, {old['fd_domain_after']:.2f} after "
                   f"({old['fd_domain_after'] / old['fd_domain_before'] - 1:+.0%})")
    else:
        out.append(f"- old classes: not measured ({old['reason']})")
    return out
