import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shapes
from tinydiffusion.data.batches import as_tensor, make_batch
from tinydiffusion.data.load import load_dataset
from tinydiffusion.errors import UsageError


def test_embedded_sprites_have_the_documented_classes_and_counts():
    d = load_dataset("sprites")
    assert d.images.shape == (3090, 32, 32, 3) and d.images.dtype == np.uint8
    assert d.counts() == {"hero": 319, "monster": 464, "item": 519, "spell": 505, "terrain": 1283}
    assert len(d.captions) == len(d.paths) == 3090 and all(str(c).strip() for c in d.captions)


def test_embedded_sprites_resize_with_a_box_filter():
    d = load_dataset("sprites", size=16)
    manual = np.asarray(Image.fromarray(load_dataset("sprites").images[7]).resize((16, 16), Image.Resampling.BOX))
    assert d.images.shape == (3090, 16, 16, 3) and np.array_equal(d.images[7], manual)


def _course_arrays(tmp_path, n=6, k=3):
    images = np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    labels = np.eye(k, dtype=np.float64)[np.arange(n) % k]
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    return images, labels


def test_course_array_format(tmp_path):
    images, labels = _course_arrays(tmp_path)
    d = load_dataset(str(tmp_path / "images.npy"), labels=str(tmp_path / "labels.npy"), class_names=["a", "b", "c"])
    assert np.array_equal(d.images, images) and d.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert d.counts() == {"a": 2, "b": 2, "c": 2}
    assert load_dataset(str(tmp_path / "images.npy"), labels=str(tmp_path / "labels.npy")).class_names == ("class0", "class1", "class2")


def test_course_array_errors_name_the_problem(tmp_path):
    _course_arrays(tmp_path)
    with pytest.raises(UsageError, match="class_names.*3 names"):
        load_dataset(str(tmp_path / "images.npy"), labels=str(tmp_path / "labels.npy"), class_names=["a", "b"])
    np.save(tmp_path / "short.npy", np.eye(3)[:4])
    with pytest.raises(UsageError, match="N = 6"):
        load_dataset(str(tmp_path / "images.npy"), labels=str(tmp_path / "short.npy"))
    np.save(tmp_path / "soft.npy", np.full((6, 3), 1 / 3))
    with pytest.raises(UsageError, match="row 0 .* not one-hot"):
        load_dataset(str(tmp_path / "images.npy"), labels=str(tmp_path / "soft.npy"))
    np.save(tmp_path / "floats.npy", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(UsageError, match="uint8 N×H×W×3"):
        load_dataset(str(tmp_path / "floats.npy"))
    (tmp_path / "garbage.npy").write_bytes(b"not numpy")
    with pytest.raises(UsageError, match="garbage.npy"):
        load_dataset(str(tmp_path / "garbage.npy"))
    with pytest.raises(UsageError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.npy"))


def _folder(tmp_path):
    images, labels, names = shapes(n_per_class=3, size=12)
    for k, (im, label) in enumerate(zip(images, labels)):
        (tmp_path / "set" / names[label]).mkdir(parents=True, exist_ok=True)
        suffix = ".png" if k % 2 else ".jpg"
        Image.fromarray(im).save(tmp_path / "set" / names[label] / f"{k}{suffix}")
    rgba = Image.new("RGBA", (20, 24), (255, 0, 0, 0))  # non-square, transparent: cropped, on black
    rgba.save(tmp_path / "set" / "square" / "wide.png")
    (tmp_path / "set" / "square" / "notes.txt").write_text("not an image")
    return tmp_path / "set"


def test_image_folder_one_subfolder_per_class(tmp_path):
    d = load_dataset(str(_folder(tmp_path)), size=8)
    assert d.class_names == ("hbar", "square", "vbar")
    assert d.counts() == {"hbar": 3, "square": 4, "vbar": 3}
    assert d.images.shape == (10, 8, 8, 3)
    wide = list(d.paths).index("wide.png" if "wide.png" in d.paths else "square/wide.png")
    assert d.images[wide].max() == 0  # fully transparent red composited on black


def test_bad_image_file_is_named_or_skipped_and_counted(tmp_path):
    root = _folder(tmp_path)
    (root / "vbar" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(UsageError, match=r"broken\.png.*--skip-bad-files"):
        load_dataset(str(root), size=8)
    d = load_dataset(str(root), size=8, skip_bad_files=True)
    assert d.skipped == 1 and len(d) == 10


def test_folder_without_class_subfolders_is_refused(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(UsageError, match="no class sub-folders"):
        load_dataset(str(tmp_path))


def test_batches_are_scaled_to_minus_one_one_and_flipped_vectorised():
    images = np.zeros((2, 4, 4, 3), np.uint8)
    images[:, :, 0] = 255  # left column white
    t = as_tensor(images)
    assert t.dtype == torch.uint8 and t.shape == (2, 3, 4, 4)
    x = make_batch(t, torch.tensor([0, 1]))
    assert x.min() == -1 and x.max() == 1 and (x[:, :, :, 0] == 1).all()
    g = torch.Generator().manual_seed(0)
    flipped = torch.cat([make_batch(t, torch.tensor([0, 1]), flip=True, generator=g) for _ in range(20)])
    left_white = (flipped[:, 0, 0, 0] == 1)
    assert 0 < left_white.sum() < 40 and ((flipped[:, 0, 0, 3] == 1) == ~left_white).all()


# ---------------------------------------------------------------------- validation (W2-1)
def test_sixteen_bit_grey_png_keeps_its_gradient(tmp_path):
    values = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)  # 0 … 65535 in 257s
    values[0, 0], values[-1, -1] = 65535, 255  # white stays white; a value under 256 is black
    (tmp_path / "set" / "grey").mkdir(parents=True)
    Image.fromarray(values).save(tmp_path / "set" / "grey" / "g16.png")
    assert Image.open(tmp_path / "set" / "grey" / "g16.png").mode in ("I;16", "I")  # a real 16-bit PNG
    d = load_dataset(str(tmp_path / "set"), size=16)
    expected = (values >> 8).astype(np.uint8)
    assert np.array_equal(d.images[0], np.repeat(expected[:, :, None], 3, axis=2))
    assert d.images[0, 0, 0, 0] == 255 and d.images[0, -1, -1, 0] == 0 and d.images[0, 0, 1, 0] == 1


@pytest.mark.parametrize("mode, value, expected", [
    ("1", 1, (255, 255, 255)), ("L", 100, (100, 100, 100)), ("LA", (100, 0), (0, 0, 0)),
    ("LA", (100, 255), (100, 100, 100)), ("RGB", (1, 2, 3), (1, 2, 3)), ("RGBA", (9, 8, 7, 0), (0, 0, 0)),
    ("RGBA", (9, 8, 7, 255), (9, 8, 7)), ("I;16", 100 * 257, (100, 100, 100)), ("I;16B", 65535, (255, 255, 255)),
    ("I", 200 * 257, (200, 200, 200)), ("I", -5, (0, 0, 0)), ("F", 42.0, (42, 42, 42)),
    ("CMYK", (0, 0, 0, 0), (255, 255, 255)), ("YCbCr", (255, 128, 128), (255, 255, 255)),
    ("La", (100, 255), (100, 100, 100)), ("RGBa", (5, 6, 7, 255), (5, 6, 7)),
])
def test_to_rgb_handles_every_pillow_mode(mode, value, expected):
    from tinydiffusion.store.imagefile import to_rgb

    rgb = to_rgb(Image.new(mode, (3, 3), value))
    assert rgb.mode == "RGB" and rgb.getpixel((1, 1)) == expected


def test_palette_and_grey_transparency_composite_on_black():
    from tinydiffusion.store.imagefile import to_rgb

    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 1
    assert np.asarray(to_rgb(p)).tolist() == [[[255, 0, 0], [0, 0, 0]]]
    grey16 = Image.fromarray(np.array([[1000, 50000]], np.uint16))
    grey16.info["transparency"] = 1000
    assert np.asarray(to_rgb(grey16)).tolist() == [[[0, 0, 0], [195, 195, 195]]]


@pytest.mark.parametrize("size", [0, -3, 100000, 1025, "16", 16.0, True])
def test_load_dataset_refuses_bad_sizes_before_loading(size, monkeypatch):
    import tinydiffusion.data.load as data

    monkeypatch.setattr(data, "load_npz", lambda *a, **k: pytest.fail("loaded before checking the size"))
    with pytest.raises(UsageError, match="image_size"):
        load_dataset("sprites", size=size)


def test_sizes_that_do_not_fit_in_memory_are_refused_before_allocating(tmp_path, monkeypatch):
    import tinydiffusion.checks as checks

    root = _folder(tmp_path)
    monkeypatch.setattr(checks, "available_memory", lambda: 2 * 10 * 64 * 64 * 3 - 1)  # budget: just under 10 at 64 px
    with pytest.raises(UsageError, match=r"image_size=64 .*fits in memory|data=.*fits in memory"):
        load_dataset(str(root), size=64)
    assert len(load_dataset(str(root), size=32)) == 10
    monkeypatch.setattr(checks, "available_memory", lambda: 2 * 20e6)  # the sprites (10 MB) fit, at 64 px (38 MB) not
    assert len(load_dataset("sprites")) == 3090
    with pytest.raises(UsageError, match="image_size=64.*fits in memory.*pack"):
        load_dataset("sprites", size=64)


@pytest.mark.parametrize("source", ["", "   ", None, 3])
def test_empty_data_source_is_refused_not_the_current_folder(source, tmp_path, monkeypatch):
    monkeypatch.chdir(_folder(tmp_path))  # a valid data folder: '' must not load it
    with pytest.raises(UsageError, match="data=.*embedded set"):
        load_dataset(source)


def test_labels_may_be_whole_floats_but_nothing_else(tmp_path):
    images = np.zeros((3, 4, 4, 3), np.uint8)
    np.savez(tmp_path / "ok.npz", images=images, labels=np.array([0.0, 2.0, 1.0]), class_names=np.array(["a", "b", "c"]))
    d = load_dataset(str(tmp_path / "ok.npz"))
    assert d.labels.dtype == np.int64 and d.labels.tolist() == [0, 2, 1]
    np.savez(tmp_path / "bad.npz", images=images, labels=np.array([0.0, 2.0000001, 1.0]), class_names=np.array(["a", "b", "c"]))
    with pytest.raises(UsageError, match=r"bad\.npz: label 1 is 2\.0000001"):
        load_dataset(str(tmp_path / "bad.npz"))


def test_decompression_bomb_is_refused_by_its_header_or_skipped(tmp_path):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    root = _folder(tmp_path)
    (root / "vbar" / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                                             + chunk(b"IEND", b""))
    with pytest.raises(UsageError, match=r"bomb\.png.*decompression bomb"):
        load_dataset(str(root), size=8)
    assert load_dataset(str(root), size=8, skip_bad_files=True).skipped == 1


def test_pickled_npy_is_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "evil.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(UsageError, match=r"evil\.npy holds pickled Python objects"):
        load_dataset(str(tmp_path / "evil.npy"))


def test_context_vectors_refuse_non_finite_rows_naming_the_row(tmp_path):
    from tinydiffusion.conditioning.dataset import load_vectors

    rows = np.zeros((4, 3), np.float32)
    rows[2, 1] = np.inf
    np.save(tmp_path / "c.npy", rows)
    with pytest.raises(UsageError, match=r"c\.npy: row 2 holds a non-finite value \(inf\)"):
        load_vectors(str(tmp_path / "c.npy"), 4)
    with pytest.raises(UsageError, match=r"N = 5"):
        load_vectors(str(tmp_path / "c.npy"), 5)
    rows[2, 1] = 0.5
    np.save(tmp_path / "c.npy", rows.astype(np.float64))
    assert load_vectors(str(tmp_path / "c.npy"), 4).dtype == np.float32
