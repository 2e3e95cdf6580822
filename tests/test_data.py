import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shapes
from tinydiffusion.data import as_tensor, load_dataset, make_batch
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
