"""Packed data sets (``data pack``): what is packed loads back identical, memory-mapped batches equal
in-RAM ones, and the writer refuses to replace anything unasked."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shapes
from tinydiffusion.cli.main import main
from tinydiffusion.data.batches import as_tensor, batch_images, make_batch
from tinydiffusion.data.load import load_dataset, sidecar
from tinydiffusion.data.pack import pack_dataset
from tinydiffusion.errors import UsageError


def _same(a, b):
    assert np.array_equal(np.asarray(a.images), np.asarray(b.images))
    for key in ("labels", "captions", "paths"):
        x, y = getattr(a, key), getattr(b, key)
        assert (x is None and y is None) or np.array_equal(x, y), key
    assert a.class_names == b.class_names


def test_pack_sprites_loads_back_identical_and_memory_mapped(tmp_path):
    packed = pack_dataset("sprites", tmp_path / "s.npy")
    loaded = load_dataset(str(tmp_path / "s.npy"))
    assert loaded.mapped and packed.mapped and not load_dataset("sprites").mapped
    _same(loaded, load_dataset("sprites"))
    assert sidecar(tmp_path / "s.npy") == tmp_path / "s.meta.npz"
    assert np.load(tmp_path / "s.npy").shape == (3090, 32, 32, 3)  # any numpy reads the images


def test_pack_at_a_size_equals_loading_at_that_size(tmp_path, shapes_npz):
    pack_dataset(str(shapes_npz), tmp_path / "p.npy", size=4)
    _same(load_dataset(str(tmp_path / "p.npy")), load_dataset(str(shapes_npz), size=4))
    # a packed set resized at load time: in RAM, as from the source
    pack_dataset(str(shapes_npz), tmp_path / "full.npy")
    resized = load_dataset(str(tmp_path / "full.npy"), size=4)
    assert not resized.mapped
    _same(resized, load_dataset(str(shapes_npz), size=4))


def _folder(tmp_path, bad: bool = False):
    images, labels, names = shapes(n_per_class=3, size=12)
    for k, (im, label) in enumerate(zip(images, labels)):
        (tmp_path / "set" / names[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(tmp_path / "set" / names[label] / f"{k}.png")
    if bad:
        (tmp_path / "set" / "hbar" / "0broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return tmp_path / "set"


def test_pack_folder_streams_and_matches_the_folder_loader(tmp_path):
    root = _folder(tmp_path)
    pack_dataset(str(root), tmp_path / "f.npy", size=8)
    _same(load_dataset(str(tmp_path / "f.npy")), load_dataset(str(root), size=8))


def test_pack_folder_skipping_bad_files_rewrites_the_count(tmp_path):
    root = _folder(tmp_path, bad=True)
    with pytest.raises(UsageError, match="0broken.png"):
        pack_dataset(str(root), tmp_path / "f.npy", size=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # nothing written, no temp file left
    packed = pack_dataset(str(root), tmp_path / "f.npy", size=8, skip_bad_files=True)
    assert packed.skipped == 1 and len(packed) == 9
    assert np.load(tmp_path / "f.npy").shape == (9, 8, 8, 3)
    assert (tmp_path / "f.npy").stat().st_size == 128 + 9 * 8 * 8 * 3  # cut after the last row kept
    _same(load_dataset(str(tmp_path / "f.npy")), load_dataset(str(root), size=8, skip_bad_files=True))


def test_pack_course_arrays_with_labels(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", np.eye(3)[np.arange(6) % 3])
    args = dict(labels=str(tmp_path / "labels.npy"), class_names=["a", "b", "c"])
    pack_dataset(str(tmp_path / "images.npy"), tmp_path / "p.npy", **args)
    _same(load_dataset(str(tmp_path / "p.npy")), load_dataset(str(tmp_path / "images.npy"), **args))
    # the course format itself is unchanged: an .npy without a sidecar, read into RAM
    assert not load_dataset(str(tmp_path / "images.npy"), **args).mapped


@pytest.mark.parametrize("flip", [False, True])
def test_memory_mapped_batches_equal_in_ram_batches(tmp_path, flip):
    pack_dataset("sprites", tmp_path / "s.npy", size=16)
    mapped, in_ram = load_dataset(str(tmp_path / "s.npy")), load_dataset("sprites", size=16)
    tensor = as_tensor(in_ram.images)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    order = torch.randperm(len(in_ram), generator=torch.Generator().manual_seed(0))
    for start in range(0, 640, 64):
        idx = order[start:start + 64]
        a = make_batch(tensor, idx, flip=flip, generator=g1)
        b = make_batch(mapped.images, idx, flip=flip, generator=g2)
        assert torch.equal(a, b)
    repeated = torch.tensor([5, 1, 5, 3000, 0])  # duplicates and any order (multinomial draws repeat)
    assert torch.equal(batch_images(mapped.images, repeated), tensor[repeated])


def test_pack_refuses_an_existing_output_unless_overwrite(tmp_path, shapes_npz):
    (tmp_path / "o.npy").write_bytes(b"precious")
    with pytest.raises(UsageError, match="o.npy exists.*--overwrite"):
        pack_dataset(str(shapes_npz), tmp_path / "o.npy")
    assert (tmp_path / "o.npy").read_bytes() == b"precious"
    pack_dataset(str(shapes_npz), tmp_path / "o.npy", overwrite=True)
    assert len(load_dataset(str(tmp_path / "o.npy"))) == 48


def test_data_pack_command(tmp_path, shapes_npz, capsys):
    out = tmp_path / "sub" / "p.npy"
    assert main(["data", "pack", str(shapes_npz), "--out", str(out), "--size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "packed 48 images, 4×4 RGB" in printed and "--image-size 4" in printed and "p.meta.npz" in printed
    assert main(["data", "info", str(out)]) == 0
    assert "memory-mapped" in capsys.readouterr().out
    assert main(["data", "pack", str(shapes_npz), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_training_from_a_packed_set_equals_training_in_ram(tmp_path, shapes_npz):
    from tinydiffusion.training.train import TrainConfig, train

    assert main(["data", "pack", str(shapes_npz), "--out", str(tmp_path / "p.npy")]) == 0
    runs = {}
    for name, data in (("ram", shapes_npz), ("mapped", tmp_path / "p.npy")):
        train(TrainConfig(data=str(data), out=str(tmp_path / name), model="tiny", image_size=8, T=50, batch_size=16,
                          steps=4, progress=False, device="cpu", sample_every=10**6))
        runs[name] = (tmp_path / name / "model" / "model.safetensors").read_bytes()
    assert runs["ram"] == runs["mapped"]  # the same batches, read from disk row by row
