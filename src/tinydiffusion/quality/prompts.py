"""Prompt following of a text model: is a sample of a prompt recognised as what the prompt names?

The data set's category evaluator (``featurenet.py``, e.g. the shipped ``emoji`` one over 8 categories) classifies
each sample; the score is the share whose category is the prompt's. Two prompt sets:

- **held-out captions**: the captions of the images the data set holds out (its ``split``), which neither the model
  nor the evaluator trained on; their ceiling is the evaluator's accuracy on those real images;
- **paraphrases**: prompts a user would type (``assets/emoji-prompts.json``: "a slice of pizza", "a cute cat"),
  each naming one emoji by its code; their ceiling is the evaluator's held-out accuracy on real images of the
  prompts' categories, averaged over the prompts.

``chance`` is the same samples scored against shuffled prompts: what a model that ignores its prompt gets.
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import torch

from ..data.batches import as_tensor, make_batch
from ..data.load import load_dataset
from ..errors import UsageError
from ..runtime import shard
from ..runtime.dist import DistInfo
from .featurenet import Evaluator

PARAPHRASES = {"emoji": "emoji-prompts.json"}  # data set -> its prompt file in the package's assets
CHANCE_SEED = 0


def real_images(dataset) -> torch.Tensor:
    """A data set's images as float ``[N, 3, H, W]`` in ``[-1, 1]``, as the samples are."""
    return make_batch(as_tensor(dataset.images), torch.arange(len(dataset)))


def category_accuracy(evaluator: Evaluator, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of ``images`` ``[N, 3, H, W]`` whose most likely category is ``labels`` ``[N]``."""
    _, logits = evaluator.run(images)
    return float((logits.argmax(1) == labels).float().mean())


def per_category(evaluator: Evaluator, images: torch.Tensor, labels: torch.Tensor, classes: int) -> np.ndarray:
    """The evaluator's accuracy per category ``[K]`` (NaN for a category without images)."""
    _, logits = evaluator.run(images)
    right = (logits.argmax(1) == labels).numpy()
    return np.array([right[labels.numpy() == k].mean() if (labels == k).any() else np.nan for k in range(classes)])


def prompt_sets(data: str, size: int) -> dict:
    """The held-out captions and the paraphrases of ``data``, with their categories and the real held-out images."""
    whole = load_dataset(data, size=size)
    held = whole.part(held_out=True)
    if whole.split is None or not len(held) or held.captions is None or held.labels is None:
        raise UsageError(f"data {data!r} holds no captioned, labelled held-out images (a 'split'): prompt following "
                         f"is measured on captions no model trained on")
    sets = {"held-out captions": ([str(c) for c in held.captions], torch.from_numpy(held.labels))}
    if data in PARAPHRASES:
        prompts = json.loads((resources.files("tinydiffusion") / "assets" / PARAPHRASES[data]).read_text("utf-8"))
        code = {str(p): int(k) for p, k in zip(whole.paths, whole.labels)}
        sets["paraphrases"] = ([p["prompt"] for p in prompts["prompts"]],
                               torch.tensor([code[p["emoji"]] for p in prompts["prompts"]]))
    return {"sets": sets, "held": held, "classes": len(whole.class_names)}


def prompt_following(pipe, evaluator: Evaluator, data: str, info: DistInfo, *, per_prompt: int, seed: int,
                     **sampling) -> dict | None:
    """Sample ``per_prompt`` images per prompt of each set (``sampling``: ``plans.plan``'s settings), score them;
    rank 0 returns ``{set: {accuracy, ceiling, chance, prompts, samples}}``, the other ranks ``None``."""
    found = prompt_sets(data, pipe.image_size)
    held, classes = found["held"], found["classes"]
    real_labels = torch.from_numpy(held.labels)
    accuracy_by_category = per_category(evaluator, real_images(held), real_labels, classes) if info.is_main else None
    report = {}
    for name, (texts, labels) in found["sets"].items():
        plan = pipe.plan(texts, n=per_prompt, seed=seed, **sampling)
        samples = shard.sample(pipe, plan, info)
        if not info.is_main:
            continue
        wanted = labels.repeat_interleave(per_prompt)  # sample k has prompt k // per_prompt
        shuffled = wanted[torch.randperm(len(wanted), generator=torch.Generator().manual_seed(CHANCE_SEED))]
        ceiling = category_accuracy(evaluator, real_images(held), real_labels) if name == "held-out captions" \
            else float(np.nanmean(accuracy_by_category[labels.numpy()]))
        accuracy = category_accuracy(evaluator, samples, wanted)
        report[name] = {"accuracy": accuracy, "ceiling": ceiling, "ratio_to_ceiling": accuracy / max(ceiling, 1e-9),
                        "chance": category_accuracy(evaluator, samples, shuffled), "prompts": len(texts),
                        "samples": len(samples)}
    return report if info.is_main else None
