"""Prompt following (quality/prompts.py) on a case where the answer is known: real images of the prompts score the
ceiling, shuffled prompts score chance; a data set's held-out images never reach training; captions alternate."""

import numpy as np
import pytest
import torch

from conftest import TINY_TRAIN, shapes
from tinydiffusion.cli.main import main
from tinydiffusion.data.load import load_dataset
from tinydiffusion.quality import prompts
from tinydiffusion.vocab import HELD_OUT


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Captioned shapes with a quarter held out and alternative captions, a tiny evaluator, a tiny text model."""
    from tinydiffusion.quality.featurenet import EvaluatorConfig, train_evaluator

    root = tmp_path_factory.mktemp("prompts")
    images, labels, names = shapes(n_per_class=24)
    words = {"square": "square", "hbar": "horizontal bar", "vbar": "vertical bar"}
    colours = ["red", "green", "blue", "yellow"]
    captions = [f"{colours[i % 4]} {words[names[k]]}" for i, k in enumerate(labels)]
    alts = [f"{c}|a {c}|{words[names[k]]}" for c, k in zip(captions, labels)]
    split = np.where(np.arange(len(labels)) % 4 == 0, HELD_OUT, 0).astype(np.int8)
    np.savez_compressed(root / "set.npz", images=images, labels=labels, class_names=np.array(names),
                        captions=np.array(captions), alt_captions=np.array(alts), split=split)
    ev = train_evaluator(EvaluatorConfig(data=str(root / "set.npz"), out=str(root / "ev"), size=8, low_size=4,
                                         width=8, epochs=40, members=1, batch_size=16, progress=False))
    assert main(["train", "--data", str(root / "set.npz"), "--out", str(root / "run"), "--steps", "2", "--context",
                 "text", "--encoder", "hash", *TINY_TRAIN]) == 0
    return root, ev, split


def test_the_evaluator_and_training_keep_the_held_out_images_out(world):
    import json

    root, ev, split = world
    assert ev.config["holdout_count"] == int((split == HELD_OUT).sum())
    trained = json.loads((root / "run" / "config.json").read_text())["dataset"]
    assert sum(trained.values()) == int((split == 0).sum())  # the run saw only the training part


def test_real_images_score_the_ceiling_and_shuffled_prompts_score_chance(world):
    root, ev, _ = world
    held = load_dataset(str(root / "set.npz"), size=8).part(held_out=True)
    real, labels = prompts.real_images(held), torch.from_numpy(held.labels)
    ceiling = prompts.category_accuracy(ev, real, labels)
    assert ceiling > 0.8  # the shapes are easy: the ceiling is high
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    assert abs(prompts.category_accuracy(ev, real, shuffled) - 1 / 3) < 0.2  # three balanced classes


def test_prompt_following_reports_each_set_beside_its_ceiling(world, monkeypatch):
    from tinydiffusion.runtime.dist import DistInfo
    from tinydiffusion.sampling.pipeline import load

    root, ev, _ = world
    pipe = load(root / "run" / "model")
    held = load_dataset(str(root / "set.npz"), size=8).part(held_out=True)
    # samples that are the real held-out images of their prompts: the metric must give exactly the ceiling
    monkeypatch.setattr(prompts.shard, "sample", lambda pipe, plan, info: prompts.real_images(held).repeat_interleave(
        len(plan.seeds), dim=0))
    report = prompts.prompt_following(pipe, ev, str(root / "set.npz"), DistInfo(), per_prompt=2, seed=0, steps=2)
    held_report = report["held-out captions"]
    assert held_report["accuracy"] == pytest.approx(held_report["ceiling"])
    assert held_report["prompts"] == len(held) and held_report["samples"] == 2 * len(held)
    assert held_report["chance"] < held_report["ceiling"]


def test_a_text_model_sees_its_captions_alternate(world):
    from tinydiffusion.conditioning.dataset import caption_alternatives, draw_contexts
    from tinydiffusion.conditioning.spec import ContextSpec

    root, _, _ = world
    dataset = load_dataset(str(root / "set.npz")).part(held_out=False)
    rows, start, count = caption_alternatives(dataset, ContextSpec.text("hash"), str(root / "set.npz"), progress=False)
    assert count.tolist() == [3] * len(dataset) and rows.shape == (3 * len(dataset), 384)
    idx = torch.zeros(200, dtype=torch.long)  # image 0, drawn 200 times: each of its three captions appears
    drawn = draw_contexts(rows[start], (rows, start, count), idx, torch.Generator().manual_seed(0))
    assert len(torch.unique(drawn, dim=0)) == 3
