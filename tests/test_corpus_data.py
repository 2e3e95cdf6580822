"""The malformed-input corpus for data and model files: each hostile file is refused at the boundary.

Data sources go through ``tinydiffusion data info`` and ``tinydiffusion train`` (the data is read
before anything is written), model folders in test_corpus_model_files.py. Every case must exit
2 with a message naming the file or parameter and the problem, no traceback, nothing written.
"""

from __future__ import annotations

import pickle
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corpus import assert_refused
from tinydiffusion.cli.main import main


# ---------------------------------------------------------------------- hostile files
def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width × height`` (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def good_png(path: Path, size: int = 8, colour=(200, 50, 50)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def good_images(n: int = 6, size: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def npz(path: Path, **arrays) -> Path:
    base = {"images": good_images(), "labels": np.arange(6) % 3, "class_names": np.array(["a", "b", "c"])}
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


def folder_with(tmp: Path, name: str, content: bytes | None = None) -> Path:
    """A class folder ``set/a`` with one good image and one file ``name`` holding ``content``."""
    good_png(tmp / "set" / "a" / "good.png")
    if content is not None:
        (tmp / "set" / "a" / name).write_bytes(content)
    return tmp / "set"


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def png_bytes(size: int = 16) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(good_images(1, size)[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def save_npy(path: Path, array, pickled: bool = False) -> Path:
    np.save(path, array, allow_pickle=pickled)
    return path


def course(tmp: Path, labels=None) -> tuple[str, list[str]]:
    save_npy(tmp / "images.npy", good_images())
    if labels is None:
        return str(tmp / "images.npy"), []
    save_npy(tmp / "labels.npy", labels, pickled=isinstance(labels, np.ndarray) and labels.dtype == object)
    return str(tmp / "images.npy"), ["--labels", str(tmp / "labels.npy")]


def packed(tmp: Path, images: np.ndarray | None = None, sidecar: bytes | None = None) -> str:
    """A packed set ``p.npy`` + ``p.meta.npz``, then (to corrupt it) its images or sidecar replaced."""
    assert main(["data", "pack", npz(tmp / "src.npz").as_posix(), "--out", str(tmp / "p.npy")]) == 0
    if images is not None:
        save_npy(tmp / "p.npy", images)
    if sidecar is not None:
        (tmp / "p.meta.npz").write_bytes(sidecar)
    return str(tmp / "p.npy")


ONE_HOT = np.eye(3)[np.arange(6) % 3]


def context_file(tmp: Path, rows) -> tuple[str, list[str]]:
    path = tmp / "ctx.npy"
    if isinstance(rows, bytes):
        path.write_bytes(rows)
    else:
        save_npy(path, rows, pickled=isinstance(rows, np.ndarray) and rows.dtype == object)
    return str(npz(tmp / "d.npz")), ["--context", "vector", "--context-file", str(path)]


def _nan_rows():
    rows = np.ones((6, 4), np.float32)
    rows[3, 2] = np.nan
    return rows


# (id, build(tmp) -> (data, extra argv), words the message must hold)
DATA_CASES = [
    ("empty-string", lambda t: ("", []), ["data", "''", "embedded"]),
    ("blank", lambda t: ("   ", []), ["data", "embedded"]),
    ("missing-path", lambda t: (str(t / "nope.npz"), []), ["nope.npz", "does not exist"]),
    ("unknown-suffix", lambda t: ((t / "x.txt").write_text("hi") and str(t / "x.txt"), []), ["x.txt", "folder"]),
    ("folder-no-classes", lambda t: (str(good_png(t / "flat" / "a.png").parent), []), ["flat", "class sub-folders"]),
    ("folder-no-images", lambda t: ((t / "set" / "a").mkdir(parents=True) or str(t / "set"), []),
     ["set", "no readable"]),
    ("bomb-header-100000", lambda t: (str(folder_with(t, "bomb.png", png_header(100_000, 100_000))), []),
     ["bomb.png", "--skip-bad-files"]),
    ("bomb-header-9000", lambda t: (str(folder_with(t, "bomb.png", png_header(9000, 9000))), []),
     ["bomb.png", "9000×9000", "decompression bomb"]),
    ("truncated-png", lambda t: (str(folder_with(t, "cut.png", truncated(png_bytes()))), []), ["cut.png"]),
    ("garbage-png", lambda t: (str(folder_with(t, "junk.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)), []),
     ["junk.png"]),
    ("gif-named-png", lambda t: (str(folder_with(t, "fake.png", b"GIF89a" + b"\x00" * 40)), []),
     ["fake.png", "not a PNG or JPEG"]),
    ("text-named-jpg", lambda t: (str(folder_with(t, "notes.jpg", b"hello")), []), ["notes.jpg"]),
    ("class-folder-plus", lambda t: (str(good_png(t / "set" / "a+b" / "x.png").parents[1]), []),
     ["a+b", "class name"]),
    ("class-folder-none", lambda t: (str(good_png(t / "set" / "None" / "x.png").parents[1]), []),
     ["None", "class name"]),
    ("npz-pickled-images", lambda t: (str(npz(t / "d.npz", images=np.array([{"x": 1}] * 6, dtype=object))), []),
     ["d.npz", "pickled"]),
    ("npz-pickled-labels", lambda t: (str(npz(t / "d.npz", labels=np.array([[1], 2, 0, 1, 2, 0], dtype=object))), []),
     ["d.npz", "pickled"]),
    ("npz-float-labels", lambda t: (str(npz(t / "d.npz", labels=np.array([0, 0.5, 1, 2, 0, 1]))), []),
     ["d.npz", "label 1", "0.5"]),
    ("npz-string-labels", lambda t: (str(npz(t / "d.npz", labels=np.array(["a", "b", "c", "a", "b", "c"]))), []),
     ["d.npz", "labels", "<U1"]),
    ("npz-2d-labels", lambda t: (str(npz(t / "d.npz", labels=np.eye(3)[np.arange(6) % 3])), []),
     ["d.npz", "labels", "(6, 3)"]),
    ("npz-labels-out-of-range", lambda t: (str(npz(t / "d.npz", labels=np.array([0, 1, 2, 3, 0, 1]))), []),
     ["d.npz", "label 3", "0..2"]),
    ("npz-negative-label", lambda t: (str(npz(t / "d.npz", labels=np.array([0, -1, 2, 0, 1, 2]))), []),
     ["d.npz", "label 1", "-1"]),
    ("npz-nan-label", lambda t: (str(npz(t / "d.npz", labels=np.array([0, 1, np.nan, 0, 1, 2]))), []),
     ["d.npz", "label 2", "nan"]),
    ("npz-bool-labels", lambda t: (str(npz(t / "d.npz", labels=np.array([True, False] * 3))), []),
     ["d.npz", "labels", "bool"]),
    ("npz-too-few-labels", lambda t: (str(npz(t / "d.npz", labels=np.array([0, 1, 2]))), []),
     ["d.npz", "labels", "(3,)", "(6,)"]),
    ("npz-labels-without-names", lambda t: (str(npz(t / "d.npz", class_names=None)), []),
     ["d.npz", "class_names"]),
    ("npz-float-images", lambda t: (str(npz(t / "d.npz", images=good_images().astype(np.float32))), []),
     ["d.npz", "float32", "uint8"]),
    ("npz-grey-images", lambda t: (str(npz(t / "d.npz", images=good_images()[..., 0])), []),
     ["d.npz", "(6, 8, 8)", "N×H×W×3"]),
    ("npz-not-square", lambda t: (str(npz(t / "d.npz", images=good_images()[:, :, :6])), []),
     ["d.npz", "(6, 8, 6, 3)", "H = W"]),
    ("npz-rgba-images", lambda t: (str(npz(t / "d.npz", images=np.zeros((6, 8, 8, 4), np.uint8))), []),
     ["d.npz", "(6, 8, 8, 4)"]),
    ("npz-empty-images", lambda t: (str(npz(t / "d.npz", images=np.zeros((0, 8, 8, 3), np.uint8), labels=None)), []),
     ["d.npz", "empty"]),
    ("npz-no-images", lambda t: (str(npz(t / "d.npz", images=None)), []), ["d.npz", "no 'images'"]),
    ("npz-truncated", lambda t: ((t / "d.npz").write_bytes(truncated(npz(t / "full.npz").read_bytes()))
                                 and str(t / "d.npz"), []), ["d.npz", "could not be read"]),
    ("npz-garbage", lambda t: ((t / "d.npz").write_bytes(b"not a zip at all") and str(t / "d.npz"), []),
     ["d.npz", "not an .npz"]),
    ("npz-names-2d", lambda t: (str(npz(t / "d.npz", class_names=np.array([["a", "b", "c"]]))), []),
     ["d.npz", "class_names", "(1, 3)"]),
    ("npz-names-repeat", lambda t: (str(npz(t / "d.npz", class_names=np.array(["a", "b", "a"]))), []),
     ["d.npz", "class_names", "distinct"]),
    ("npz-name-mixture", lambda t: (str(npz(t / "d.npz", class_names=np.array(["a", "b=1", "c"]))), []),
     ["d.npz", "b=1", "class name"]),
    ("npz-captions-short", lambda t: (str(npz(t / "d.npz", captions=np.array(["x", "y"]))), []),
     ["d.npz", "captions", "(2,)"]),
    ("npy-pickled", lambda t: (str(save_npy(t / "images.npy", np.array([{"x": 1}], dtype=object), pickled=True)), []),
     ["images.npy", "pickled"]),
    ("npy-raw-pickle", lambda t: ((t / "images.npy").write_bytes(pickle.dumps({"x": 1})) and str(t / "images.npy"), []),
     ["images.npy", "not a .npy"]),
    ("npy-garbage", lambda t: ((t / "images.npy").write_bytes(b"garbage") and str(t / "images.npy"), []),
     ["images.npy", "not a .npy"]),
    ("npy-is-a-zip", lambda t: ((t / "images.npy").write_bytes(npz(t / "z.npz").read_bytes())
                                and str(t / "images.npy"), []), ["images.npy", "not a .npy"]),
    ("npy-truncated", lambda t: ((t / "images.npy").write_bytes(
        truncated(save_npy(t / "full.npy", good_images(50, 16)).read_bytes())) and str(t / "images.npy"), []),
     ["images.npy", "could not be read"]),
    ("npy-float-images", lambda t: (str(save_npy(t / "images.npy", good_images().astype(np.float64))), []),
     ["images.npy", "float64", "uint8"]),
    ("npy-empty", lambda t: (str(save_npy(t / "images.npy", np.zeros((0, 8, 8, 3), np.uint8))), []),
     ["images.npy", "empty"]),
    ("npy-huge-claim", lambda t: (str(_huge_npy(t / "images.npy")), []), ["images.npy", "fits in memory"]),
    ("npz-huge-claim", lambda t: (str(_huge_npz(t / "d.npz")), []), ["d.npz", "fits in memory"]),
    ("labels-wrong-rows", lambda t: course(t, np.eye(3)[:4]), ["labels", "labels.npy", "N = 6"]),
    ("labels-not-one-hot", lambda t: course(t, np.full((6, 3), 1 / 3)), ["labels.npy", "row 0", "not one-hot"]),
    ("labels-nan", lambda t: course(t, np.where(np.eye(3)[np.arange(6) % 3] == 1, np.nan, 0)),
     ["labels.npy", "row 0", "nan"]),
    ("labels-pickled", lambda t: course(t, np.array([{"x": 1}] * 6, dtype=object)), ["labels.npy", "pickled"]),
    ("labels-strings", lambda t: course(t, np.array([["1", "0", "0"]] * 6)), ["labels", "<U1"]),
    ("labels-missing-file", lambda t: (course(t)[0], ["--labels", str(t / "nope.npy")]), ["labels", "nope.npy"]),
    ("labels-with-npz", lambda t: (str(npz(t / "d.npz")), course(t, ONE_HOT)[1]),
     ["labels", "images .npy"]),
    ("class-names-without-labels", lambda t: (course(t)[0], ["--class-names", "a,b,c"]), ["class_names", "--labels"]),
    ("class-names-count", lambda t: (course(t, ONE_HOT)[0], course(t, ONE_HOT)[1] + ["--class-names", "a,b"]),
     ["class_names", "3 names"]),
    ("packed-sidecar-garbage", lambda t: (packed(t, sidecar=b"junk"), []),
     ["p.meta.npz", "not an .npz"]),
    ("packed-images-replaced", lambda t: (packed(t, images=good_images()[::-1].copy()), []),
     ["p.npy", "do not match"]),
    ("packed-count-differs", lambda t: (packed(t, images=good_images(5)), []),
     ["p.npy", "(5, 8, 8, 3)", "pack it again"]),
    ("packed-with-labels", lambda t: (packed(t), course(t, ONE_HOT)[1]),
     ["labels", "packed"]),
]

TRAIN_ONLY_CASES = [
    ("image-size-huge", lambda t: (str(npz(t / "d.npz")), ["--image-size", "100000"]), ["image_size", "100000"]),
    ("image-size-zero", lambda t: (str(npz(t / "d.npz")), ["--image-size", "0"]), ["image_size", "0"]),
    ("context-file-nan-row", lambda t: context_file(t, _nan_rows()), ["context_file", "ctx.npy", "row 3", "nan"]),
    ("context-file-inf-row", lambda t: context_file(t, np.full((6, 4), 1e300)), ["context_file", "ctx.npy", "row 0"]),
    ("context-file-wrong-rows", lambda t: context_file(t, np.ones((5, 4), np.float32)),
     ["context_file", "(5, 4)", "N = 6"]),
    ("context-file-1d", lambda t: context_file(t, np.ones(6, np.float32)), ["context_file", "(6,)"]),
    ("context-file-strings", lambda t: context_file(t, np.array([["a"] * 4] * 6)), ["context_file", "<U1"]),
    ("context-file-pickled", lambda t: context_file(t, np.array([{"x": 1}] * 6, dtype=object)),
     ["context_file", "ctx.npy", "pickled"]),
    ("context-file-garbage", lambda t: context_file(t, b"junk"), ["context_file", "ctx.npy", "not a .npy"]),
]


def _huge_npy(path: Path) -> Path:
    """A valid .npy header claiming a trillion images, and no data."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                 "shape": (10**12, 32, 32, 3)})
    return path


def _huge_npz(path: Path) -> Path:
    """An .npz whose images.npy member claims a trillion images in a few bytes."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (10**12, 32, 32, 3)})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("images.npy", header.getvalue())
    return path


TRAIN = ["--steps", "1", "--model", "tiny", "--T", "50", "--batch-size", "2", "--no-progress", "--device", "cpu"]


@pytest.mark.parametrize("build, names", [pytest.param(b, n, id=i) for i, b, n in DATA_CASES])
def test_data_info_refuses(build, names, tmp_path, capsys):
    data, extra = build(tmp_path)
    assert_refused(["data", "info", data, *extra], names, tmp_path, capsys)


@pytest.mark.parametrize("build, names", [pytest.param(b, n, id=i) for i, b, n in DATA_CASES + TRAIN_ONLY_CASES])
def test_train_refuses_data(build, names, tmp_path, capsys):
    data, extra = build(tmp_path)
    size = [] if "--image-size" in extra else ["--image-size", "8"]
    assert_refused(["train", "--data", data, *extra, *size, *TRAIN, "--out", tmp_path / "run"], names, tmp_path, capsys)


def test_skip_bad_files_counts_a_bomb_as_a_bad_file(tmp_path, capsys):
    root = folder_with(tmp_path, "bomb.png", png_header(100_000, 100_000))
    assert main(["data", "info", str(root), "--skip-bad-files"]) == 0
    printed = capsys.readouterr().out
    assert "1 images" in printed and "1 bad files skipped" in printed


# ---------------------------------------------------------------------- data pack
PACK_CASES = [
    ("out-exists", lambda t: (t / "o.npy").write_bytes(b"old") and ["sprites", "--out", t / "o.npy"],
     ["out", "o.npy", "--overwrite"]),
    ("sidecar-exists", lambda t: (t / "o.meta.npz").write_bytes(b"old") and ["sprites", "--out", t / "o.npy"],
     ["out", "o.meta.npz", "--overwrite"]),
    ("out-not-npy", lambda t: ["sprites", "--out", t / "o.npz"], ["out", "o.npz", ".npy"]),
    ("out-is-source", lambda t: [packed(t), "--out", t / "p.npy", "--overwrite"], ["out", "p.npy", "other than"]),
    ("out-is-folder", lambda t: (t / "o.npy").mkdir() or ["sprites", "--out", t / "o.npy", "--overwrite"],
     ["out", "o.npy", "existing folder"]),
    ("out-inside-a-file", lambda t: (t / "f").write_text("x") and ["sprites", "--out", t / "f" / "o.npy"],
     ["out", "is a file"]),
    ("size-huge", lambda t: ["sprites", "--out", t / "o.npy", "--size", "100000"], ["image_size", "100000"]),
    ("bad-file-in-folder", lambda t: [folder_with(t, "cut.png", truncated(png_bytes())), "--out", t / "o.npy"],
     ["cut.png", "--skip-bad-files"]),
    ("labels-for-folder", lambda t: [folder_with(t, "x.png"), "--out", t / "o.npy", "--labels", t / "l.npy"],
     ["labels", "folder"]),
]


@pytest.mark.parametrize("build, names", [pytest.param(b, n, id=i) for i, b, n in PACK_CASES])
def test_data_pack_refuses(build, names, tmp_path, capsys):
    argv = build(tmp_path)
    assert_refused(["data", "pack", *argv], names, tmp_path, capsys)


def test_data_pack_refuses_without_room_on_disk(tmp_path, capsys, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))  # 1 kB left
    assert_refused(["data", "pack", "sprites", "--out", tmp_path / "o.npy"], ["out", "o.npy", "fits on disk"],
                   tmp_path, capsys)
