"""``tinydiffusion edit`` and ``interpolate`` end to end on a tiny model: every --out form, the GIFs, errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tinydiffusion.cli.main import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import train_tiny

    root = tmp_path_factory.mktemp("edit")
    train_tiny(root, 2)
    picture = np.zeros((12, 20, 3), np.uint8)  # not square: centre-cropped to 12×12, then resized to 8×8
    picture[:, 4:16] = (200, 40, 90)
    Image.fromarray(picture).save(root / "in.png")
    mask = np.full((30, 30), 255, np.uint8)  # any size: resized with nearest
    mask[:, 15:] = 0  # the right half is generated
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(np.full((5, 5), 255, np.uint8)).save(root / "white.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "black.png")
    (root / "text.png").write_text("not an image")
    return root


def _edit(root, *args):
    return main(["edit", str(root / "run" / "model"), "--image", str(root / "in.png"), "--steps", "4", *args])


def test_edit_help_does_not_import_torch():
    code = ("import sys; from tinydiffusion.cli.main import main\n"
            "for cmd in ('edit', 'interpolate'):\n"
            "    try:\n        main([cmd, '--help'])\n    except SystemExit:\n        pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--strength" in out.stdout and "--seed-a" in out.stdout


def test_edit_grid_shows_input_then_outputs_and_a_gif(trained, capsys):
    out, gif = trained / "e.png", trained / "e.gif"
    assert _edit(trained, "--context", "hbar", "--context", "vbar", "--strength", "0.5", "--n", "3",
                 "--out", str(out), "--gif", str(gif)) == 0
    printed = capsys.readouterr().out
    assert "6 images edited with dpmpp_2m at strength 0.5 of 4 steps" in printed and "4 network evaluations" in printed  # 2 guided steps
    grid = Image.open(out)
    assert grid.size == (((8 + 1) * 4 + 1) * 8, ((8 + 1) * 2 + 1) * 8)  # 2 rows × (input + 3), 8× enlarged
    meta = json.loads(grid.text["tinydiffusion"])
    assert meta["strength"] == 0.5 and meta["sampler"] == "dpmpp_2m" and meta["nfe"] == 4
    assert Image.open(gif).n_frames == 3  # 2 steps + the result


def test_inpaint_npz_keeps_the_white_part_exactly(trained):
    out = trained / "i.npz"
    assert _edit(trained, "--mask", str(trained / "mask.png"), "--context", "square", "--n", "2", "--resample", "2",
                 "--jump-length", "2", "--out", str(out)) == 0
    d = np.load(out)
    assert d["images"].shape == (2, 8, 8, 3) and d["inputs"].shape == (1, 8, 8, 3) and d["mask"].shape == (8, 8)
    keep = d["mask"] == 255
    assert keep[:, :4].all() and not keep[:, 4:].any()
    assert (d["images"][:, keep] == d["inputs"][0][keep]).all()
    assert d["labels"].tolist() == [0, 0] and d["contexts"].shape == (2, 3)
    meta = json.loads(str(d["metadata"]))
    assert meta["resample"] == 2 and meta["nfe"] == 2 * (4 + 1 * 2 * 1) and meta["strength"] == 1.0


def test_inpaint_with_ddim_writes_its_output_and_says_ddim(trained, capsys):
    out = trained / "ddim.npz"
    assert _edit(trained, "--mask", str(trained / "mask.png"), "--context", "square", "--n", "2", "--sampler", "ddim",
                 "--eta", "0.5", "--resample", "2", "--jump-length", "2", "--out", str(out)) == 0
    assert "2 images inpainted (RePaint, 4 ddim steps, resample 2" in capsys.readouterr().out
    d = np.load(out)
    keep = d["mask"] == 255
    assert d["images"].shape == (2, 8, 8, 3) and (d["images"][:, keep] == d["inputs"][0][keep]).all()
    meta = json.loads(str(d["metadata"]))
    assert meta["sampler"] == "ddim" and meta["eta"] == 0.5 and meta["steps"] == 4 and meta["nfe"] == 2 * (4 + 2)


def test_edit_folder_and_interpolation_strip(trained, capsys):
    folder = trained / "edits"
    assert _edit(trained, "--context", "vbar", "--n", "2", "--mask", str(trained / "mask.png"), "--out",
                 str(folder)) == 0
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["0000_vbar_seed0.png", "0001_vbar_seed1.png", "input.png", "mask.png", "metadata.json"]
    strip, gif = trained / "strip.png", trained / "strip.gif"
    assert main(["interpolate", str(trained / "run" / "model"), "--seed-a", "1", "--seed-b", "2", "--frames", "5",
                 "--context", "square", "--context-to", "hbar", "--steps", "3", "--out", str(strip),
                 "--gif", str(gif)]) == 0
    assert "5 frames with dpmpp_2m, 6 network evaluations each" in capsys.readouterr().out
    assert Image.open(strip).size == (((8 + 1) * 5 + 1) * 8, (8 + 2) * 8) and Image.open(gif).n_frames == 5
    assert main(["interpolate", str(trained / "run" / "model"), "--frames", "3", "--steps", "2", "--out",
                 str(trained / "f.npz")]) == 0
    d = np.load(trained / "f.npz")
    assert d["images"].shape == (3, 8, 8, 3) and d["weights"].tolist() == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("args, message", [
    (["--strength", "0"], "strength=0.0"),
    (["--strength", "1.5"], "strength=1.5"),
    (["--strength", "nan"], "argument --strength: expected a finite number"),
    (["--image", "nowhere.png"], "image: image file nowhere.png could not be read"),
    (["--image", "{root}/text.png"], "not a PNG or JPEG image"),
    (["--mask", "{root}/white.png"], "keeps every pixel"),
    (["--mask", "{root}/black.png"], "generates every pixel"),
    (["--mask", "{root}/text.png"], "mask: image file"),
    (["--mask", "{root}/mask.png", "--sampler", "dpmpp_2m"], "sampler='dpmpp_2m'"),
    (["--mask", "{root}/mask.png", "--sampler", "ddim", "--variance", "small"], "variance='small' is not an option"),
    (["--mask", "{root}/mask.png", "--resample", "3", "--jump-length", "4"], "jump_length=4"),
    (["--resample", "0"], "resample=0"),
    (["--context", "dragon"], "known classes: square, hbar, vbar"),
    (["--guidance", "-1"], "guidance=-1.0"),
    (["--steps", "51"], "steps=51"),
    (["--out", "x.jpg"], "out='x.jpg'"),
])
def test_edit_errors_exit_2_naming_the_problem(trained, capsys, tmp_path, args, message):
    out = tmp_path / "never.png"
    args = [a.replace("{root}", str(trained)) for a in args]
    image = [] if args[0] == "--image" else ["--image", str(trained / "in.png")]
    code = _exit_code(["edit", str(trained / "run" / "model"), *image, "--steps", "4", "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--frames", "1"], "frames=1"),
    (["--sampler", "ddpm"], "invalid choice: 'ddpm'"),
    (["--context-to", "hbar"], "context_to='hbar'"),
    (["--seed-a", "-1"], "seed_a=-1"),
])
def test_interpolate_errors_exit_2(trained, capsys, tmp_path, args, message):
    out = tmp_path / "never.png"
    assert _exit_code(["interpolate", str(trained / "run" / "model"), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not out.exists()


def _exit_code(argv) -> int:
    """``main``'s exit code, argparse's own refusals (SystemExit) included."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code
