"""The command line end to end on a tiny model: train → sample (PNG, GIF, npz, folder), errors, --help."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tinydiffusion.cli.main import main


def test_help_answers_without_importing_torch():
    code = ("import sys; from tinydiffusion.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "train" in out.stdout and "sample" in out.stdout


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "tinydiffusion", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("tinydiffusion ")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import train_tiny

    root = tmp_path_factory.mktemp("cli")
    train_tiny(root, 4, "--sample-every", "2")
    return root


def test_train_writes_the_run_folder(trained):
    run = trained / "run"
    assert (run / "samples" / "step_000002.png").exists() and (run / "samples" / "final.png").exists()
    assert (run / "metrics.csv").read_text().startswith("step,epoch,loss,lr,images_per_s,elapsed_s")


def test_sample_png_grid_and_gif(trained, capsys):
    model = str(trained / "run" / "model")
    assert main(["sample", model, "--sampler", "ddim", "--steps", "5", "--n", "4", "--out", str(trained / "g.png"),
                 "--gif", str(trained / "g.gif")]) == 0
    printed = capsys.readouterr().out
    # guidance from the card (3): both halves are evaluated, 2 network evaluations per step
    assert "12 images with ddim, 10 network evaluations each" in printed and "wall time" in printed
    grid = Image.open(trained / "g.png")
    assert grid.size == (((8 + 1) * 4 + 1) * 8, ((8 + 1) * 3 + 1) * 8)  # 3 rows × 4 columns, 1 px gaps, 8× enlarged
    gif = Image.open(trained / "g.gif")
    assert gif.n_frames == 6  # 5 steps + the result


def test_sample_npz_has_images_labels_and_contexts(trained):
    out = trained / "s.npz"
    assert main(["sample", str(trained / "run" / "model"), "--context", "square", "--context", "vbar", "--n", "3",
                 "--steps", "4", "--out", str(out)]) == 0
    d = np.load(out)
    assert d["images"].shape == (6, 8, 8, 3) and d["images"].dtype == np.uint8
    assert d["labels"].tolist() == [0, 0, 0, 2, 2, 2]
    assert d["contexts"].shape == (6, 3)
    assert main(["sample", str(trained / "run" / "model"), "--context", "square=1,hbar=0.5", "--n", "2",
                 "--steps", "3", "--sampler", "ddim", "--out", str(trained / "mix.npz")]) == 0
    mix = np.load(trained / "mix.npz")
    assert "labels" not in mix and mix["contexts"][0].tolist() == [1.0, 0.5, 0.0]


def test_sample_folder_of_pngs(trained):
    out = trained / "folder"
    assert main(["sample", str(trained / "run" / "model"), "--context", "hbar", "--n", "2", "--steps", "2",
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0000_hbar_seed0.png", "0001_hbar_seed1.png", "metadata.json"]


@pytest.mark.parametrize("args, message", [
    (["--context", "dragon"], "known classes: square, hbar, vbar"),
    (["--steps", "0"], "steps=0"),
    (["--steps", "51"], "steps=51"),
    (["--sampler", "ddpm", "--eta", "0.3"], "eta=0.3 is not an option of the ddpm sampler"),
    (["--n", "0"], "n=0"),
    (["--out", "x.jpg"], "out='x.jpg'"),
])
def test_sample_errors_exit_2_with_a_clear_message(trained, capsys, args, message):
    assert main(["sample", str(trained / "run" / "model"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_train_errors_exit_2(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--image-size", "10", "--steps", "1", "--no-progress"]) == 2
    assert "image_size=10" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_data_info_prints_counts_per_class(capsys):
    assert main(["data", "info"]) == 0
    out = capsys.readouterr().out
    assert "3090 images" in out and "terrain" in out and "1283" in out


def test_cli_sampler_names_are_the_registry():
    from tinydiffusion.vocab import SAMPLERS as SAMPLER_NAMES
    from tinydiffusion.core.samplers import SAMPLERS

    assert tuple(SAMPLERS) == SAMPLER_NAMES


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler"])
def test_guided_sampling_with_every_solver_records_its_settings(trained, sampler):
    import json

    out = trained / f"guided_{sampler}.png"
    assert main(["sample", str(trained / "run" / "model"), "--sampler", sampler, "--steps", "4", "--n", "2",
                 "--guidance", "3", "--guidance-rescale", "0.7", "--clip-x0", "--out", str(out)]) == 0
    meta = json.loads(Image.open(out).text["tinydiffusion"])
    assert meta["sampler"] == sampler and meta["guidance"] == 3.0 and meta["clip_x0"] is True
    assert meta["nfe"] == 8 and meta["rows"] == ["square", "hbar", "vbar"]  # 4 guided steps, 2 halves each


def test_sampling_settings_that_do_not_match_the_model_are_refused(trained, capsys):
    model = str(trained / "run" / "model")
    assert main(["sample", model, "--prediction", "eps", "--steps", "2", "--out", "never.png"]) == 2
    assert "trained to predict 'v', not 'eps'" in capsys.readouterr().err
    assert main(["sample", model, "--schedule", "cosine", "--steps", "2", "--out", "never.png"]) == 2
    assert "schedule kind='linear', not 'cosine'" in capsys.readouterr().err
