"""Outputs appear whole or not at all: grids, GIFs, .npz, folders of samples, eval and compare files.

A reader polling a file while writers rewrite it never sees half a file; a failing writer leaves the
old output intact and no temp file behind; a folder of samples is streamed into a hidden sibling
(bounded memory) and swapped in at the end.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_TRAIN
from tinydiffusion.cli.main import main
from tinydiffusion.store.pictures import save_grid


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_a_reader_never_sees_a_half_written_png(tmp_path):
    path = tmp_path / "grid.png"
    pictures = [np.full((16, 8, 8, 3), v, np.uint8) for v in (40, 200)]  # two different grids
    save_grid(pictures[0], path, ncol=4)
    stop, seen, broken = threading.Event(), [], []

    def read():
        while not stop.is_set():
            try:
                with Image.open(path) as im:
                    im.load()
                    seen.append(im.getpixel((10, 10)))
            except Exception as e:  # a truncated or missing file would land here
                broken.append(repr(e))

    def write(k):
        for _ in range(40):
            save_grid(pictures[k], path, ncol=4)

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(k,)) for k in (0, 1)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    reader.join()
    assert not broken, broken[:3]
    assert len(seen) > 10 and {p[0] for p in seen} <= {40, 200}
    assert _leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]


def test_a_failing_writer_keeps_the_old_file(tmp_path, monkeypatch):
    from tinydiffusion.store.pictures import save_gif

    path = tmp_path / "grid.png"
    save_grid(np.zeros((4, 8, 8, 3), np.uint8), path, ncol=2)
    before = path.read_bytes()

    def broken_save(self, f, *args, **kwargs):
        f.write(b"\x89PNG half")
        raise RuntimeError("disk went away")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(RuntimeError):
        save_grid(np.full((4, 8, 8, 3), 255, np.uint8), path, ncol=2)
    with pytest.raises(RuntimeError):
        save_gif([np.zeros((4, 8, 8, 3), np.uint8)] * 2, tmp_path / "a.gif", ncol=2)
    assert path.read_bytes() == before and _leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]


@pytest.fixture
def one_thread():
    """Hundreds of tiny batches: on a busy 2-core machine two threads spin-wait for each other (20× slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from conftest import train_tiny

    return str(train_tiny(tmp_path_factory.mktemp("atomic"), 2) / "model")


def test_a_failing_npz_write_keeps_the_old_samples(model, tmp_path, monkeypatch):
    import tinydiffusion.store.files as files

    out = tmp_path / "s.npz"
    assert main(["sample", model, "--steps", "2", "--n", "2", "--out", str(out)]) == 0
    before = out.read_bytes()

    def broken(f, **arrays):
        f.write(b"PK half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", broken)
    assert main(["sample", model, "--steps", "2", "--n", "3", "--out", str(out)]) == 2  # a full disk is a UsageError
    assert out.read_bytes() == before and _leftovers(tmp_path) == []
    assert files.TMP_SUFFIX == ".tmp"


def test_a_sample_folder_is_streamed_into_a_hidden_sibling_and_appears_whole(model, tmp_path, monkeypatch):
    """The PNGs of earlier batches are on disk (in the hidden temp folder) while later batches are made,
    the folder itself appears only at the end, and an old folder of the same name is replaced whole."""
    from tinydiffusion.sampling.generate import SampleConfig, sample_to_files
    from tinydiffusion.sampling.pipeline import load

    out = tmp_path / "samples"
    out.mkdir()
    (out / "old.png").write_bytes(b"old")  # an earlier folder of samples
    (out / "metadata.json").write_text("{}")
    pipe = load(model)
    counts = []

    def look(*_):
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".samples.") and p.name.endswith(".tmp")]
        counts.append(len(list(temps[0].glob("*.png"))) if temps else -1)
        assert (out / "old.png").exists()  # the old folder stays whole until the new one is complete

    hook = pipe.model.register_forward_hook(look)
    try:
        result = sample_to_files(SampleConfig(model, sampler="ddim", steps=1, n=4, batch_size=4, out=str(out)), pipe)
    finally:
        hook.remove()
    assert counts == [0, 4, 8]  # 3 rows of 4 in batches of 4: each batch written before the next is made
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 13 and "metadata.json" in names and "old.png" not in names
    assert result.paths == [out] and _leftovers(tmp_path) == []


def test_a_failing_folder_run_leaves_the_old_folder(model, tmp_path, monkeypatch):
    import tinydiffusion.sampling.generate as generate

    out = tmp_path / "samples"
    assert main(["sample", model, "--steps", "1", "--n", "2", "--out", str(out)]) == 0
    before = sorted(p.name for p in out.iterdir())
    calls = []

    def broken(*args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args)

    real = generate.write_pngs
    monkeypatch.setattr(generate, "write_pngs", broken)
    assert main(["sample", model, "--steps", "1", "--n", "2", "--batch-size", "2", "--out", str(out)]) == 2
    assert sorted(p.name for p in out.iterdir()) == before and _leftovers(tmp_path) == []


def test_a_folder_streams_what_an_npz_could_not_hold(model, tmp_path, monkeypatch, one_thread):
    """With a 400 KB memory budget, 3 × 200 images are refused as one .npz but stream to a folder
    (only one batch of 4 is in memory at a time)."""
    import tinydiffusion.checks as checks
    from tinydiffusion import UsageError
    from tinydiffusion.sampling.generate import SampleConfig, sample_to_files
    from tinydiffusion.sampling.pipeline import load

    pipe = load(model)
    monkeypatch.setattr(checks, "available_memory", lambda: 800e3)
    settings = dict(sampler="ddim", steps=1, guidance=1.0, n=200, batch_size=4)
    with pytest.raises(UsageError, match="n=200 is not allowed: expected a size whose 600 images"):
        sample_to_files(SampleConfig(model, out=str(tmp_path / "all.npz"), **settings), pipe)
    assert not (tmp_path / "all.npz").exists()
    sample_to_files(SampleConfig(model, out=str(tmp_path / "many"), **settings), pipe)
    files = sorted((tmp_path / "many").glob("*.png"))
    assert len(files) == 600 and files[0].name == "0000_square_seed0.png" and files[-1].name == "0599_vbar_seed199.png"


def test_gif_frames_stay_bounded_whatever_the_steps():
    import torch

    from tinydiffusion.sampling.outputs import MAX_GIF_FRAMES, Frames
    from tinydiffusion.runtime.dist import DistInfo

    frames = Frames()
    for b in range(3):
        frames.batch = b
        for i in range(1000):
            frames(i, 999 - i, torch.zeros(2, 3, 4, 4), None)
            assert len(frames.parts) <= 2 * MAX_GIF_FRAMES + 1
    assert all(sorted(p) == [0, 1, 2] for p in frames.parts.values())  # every kept step for every batch
    thinned = frames.gather(DistInfo())
    assert 1 < len(thinned) <= MAX_GIF_FRAMES and thinned[0].shape == (6, 4, 4, 3)


def test_eval_and_compare_leave_no_temp_files(tmp_path):
    """Each file is swapped in whole: nothing named *.tmp is left beside the outputs."""
    from conftest import shapes
    from tinydiffusion.quality.featurenet import EvaluatorConfig, train_evaluator

    images, labels, names = shapes()
    np.savez_compressed(tmp_path / "shapes.npz", images=images, labels=labels, class_names=np.array(names))
    train_evaluator(EvaluatorConfig(data=str(tmp_path / "shapes.npz"), out=str(tmp_path / "ev"), size=8, low_size=4,
                                    width=8, epochs=1, members=1, batch_size=16, progress=False))
    assert main(["train", "--data", str(tmp_path / "shapes.npz"), "--out", str(tmp_path / "run"), "--steps", "1",
                 *TINY_TRAIN]) == 0
    model, ev = str(tmp_path / "run" / "model"), str(tmp_path / "ev")
    assert main(["eval", model, "--evaluator", ev, "--per-class", "2", "--steps", "1",
                 "--out", str(tmp_path / "e" / "eval.json")]) == 0
    assert main(["compare", model, "--evaluator", ev, "--per-class", "2", "--settings", "ddim:1,ddim:2",
                 "--out", str(tmp_path / "c"), "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["eval.json", "eval_closest.png"]
    assert {p.name for p in (tmp_path / "c").iterdir()} >= {"compare.json", "compare.csv", "compare_grid.png"}
    assert _leftovers(tmp_path) == []
