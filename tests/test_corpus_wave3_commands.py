"""Hostile and careless inputs to edit, train --resume and data found in wave 3's review: each refused at the
boundary with exit 2, no traceback, a message naming the parameter (and what to do), nothing touched."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_TRAIN, shapes, train_tiny
from corpus import assert_refused
from tinydiffusion.cli.main import main


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A tiny class model, a hand-made one-step and four-step 'student' of it, an input picture and a mask."""
    root = tmp_path_factory.mktemp("wave3")
    train_tiny(root, 2)
    for steps in (1, 4):
        student = root / f"student{steps}"
        shutil.copytree(root / "run" / "model", student)
        config = json.loads((student / "config.json").read_text())
        config["distilled"] = {"method": "progressive", "sampler": "ddim", "steps": [steps], "guidance": 3.0,
                               "teacher": str(root / "run" / "model")}
        config["recommended"] = {"sampler": "ddim", "steps": steps, "guidance": 3.0}
        (student / "config.json").write_text(json.dumps(config))
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(root / "in.png")
    mask = np.full((8, 8), 255, np.uint8)
    mask[:, 4:] = 0
    Image.fromarray(mask).save(root / "mask.png")
    return root


def _edit(root, model, *args):
    return ["edit", str(root / model), "--image", str(root / "in.png"), *args]


CASES = [  # (id, argv builder, names the message must hold)
    ("one-step-student-strength", lambda r: _edit(r, "student1", "--strength", "0.2", "--out", str(r / "o.png")),
     ["strength=0.2", "one step"]),
    ("four-step-student-strength-rounds-to-all", lambda r: _edit(r, "student4", "--strength", "0.95",
                                                                   "--out", str(r / "o.png")), ["strength=0.95", "0.875"]),
    ("student-inpainting", lambda r: _edit(r, "student4", "--mask", str(r / "mask.png"), "--out", str(r / "o.png")),
     ["mask", "students cannot inpaint"]),
    ("out-is-the-image", lambda r: _edit(r, "run/model", "--out", str(r / "in.png")), ["out=", "--image"]),
    ("out-is-the-mask", lambda r: _edit(r, "run/model", "--mask", str(r / "mask.png"), "--out", str(r / "mask.png")),
     ["out=", "--mask"]),
    ("resample-huge", lambda r: _edit(r, "run/model", "--mask", str(r / "mask.png"), "--resample", "1000000000",
                                      "--out", str(r / "o.png")), ["resample=1000000000", "1..100"]),
    ("jump-length-huge", lambda r: _edit(r, "run/model", "--mask", str(r / "mask.png"), "--jump-length",
                                         str(10**12), "--out", str(r / "o.png")), ["jump_length=1000000000000"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_edit_refuses(root, case, capsys):
    _, argv, names = case
    assert_refused(argv(root), names, root, capsys)


def test_a_resume_refuses_other_settings_by_name(root, capsys):
    run = ["train", "--data", str(root / "shapes.npz"), "--out", str(root / "run"), "--steps", "3"]
    tiny = [a if a != "8" else "16" for a in TINY_TRAIN]  # --image-size 16 instead of 8
    err = assert_refused([*run, "--resume", *tiny], ["image_size=8 there, 16 here"], root / "run", capsys)
    assert "--overwrite" in err
    assert_refused([*run, "--resume", "auto", "--batch-size", "4", "--model", "tiny"], ["batch_size=16 there, 4 here"],
                   root / "run", capsys)


def test_a_resume_says_which_settings_it_continues_with(root, tmp_path, capsys):
    shutil.copytree(root / "run", tmp_path / "run")
    assert main(["train", "--data", str(root / "shapes.npz"), "--out", str(tmp_path / "run"), "--steps", "3",
                 "--resume", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "continuing with the run's settings" in err and "image size 8" in err and "batch size 16" in err


def test_a_packed_set_without_its_labels_file_names_it(root, tmp_path, capsys):
    images, _, _ = shapes()
    np.save(tmp_path / "set.npy", images)  # as data pack writes it, its set.meta.npz gone
    assert_refused(["train", "--data", str(tmp_path / "set.npy"), "--out", str(tmp_path / "r"), "--steps", "1",
                    *TINY_TRAIN], ["set.meta.npz", "--labels"], tmp_path, capsys)


def test_a_folder_named_like_a_shipped_model_does_not_hide_it(tmp_path, monkeypatch):
    from tinydiffusion.sampling.pipeline import resolve_model

    (tmp_path / "sprites").mkdir()  # e.g. a folder of the user's own sprite pictures
    monkeypatch.chdir(tmp_path)
    assert resolve_model("sprites").name == "sprites" and (resolve_model("sprites") / "config.json").is_file()
    (tmp_path / "sprites" / "config.json").write_text("{}")  # an exported model of that name: the user's wins
    assert resolve_model("sprites") == tmp_path / "sprites" or resolve_model("sprites").resolve() == \
        (tmp_path / "sprites").resolve()
