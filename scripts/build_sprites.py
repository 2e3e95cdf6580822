"""Build ``src/tinydiffusion/assets/sprites.npz``: Dungeon Crawl Stone Soup tiles, 5 classes.

This script is run once by a developer; the resulting ``.npz`` is committed.
Users and CI never need apt, the tarball or this script.

Source: the Debian source package ``crawl`` 0.28.0, file ``crawl_0.28.0.orig.tar.xz``
(sha256 below), folder ``stone_soup-0.28.0/source/rltiles``. Most tiles are CC0; every file
name listed in ``TILES_UNDER_UNKNOWN_LICENSE.md`` is dropped. See ``NOTICE-sprites.md``.

The tarball is fetched with a private apt state directory (the system's apt state is not
touched); a ``deb-src`` entry is derived from ``/etc/apt/sources.list.d/debian.sources``.

Rebuild (from the repository root, in a venv with numpy and Pillow)::

    python scripts/build_sprites.py            # downloads into --work (cached)
    python scripts/build_sprites.py --tarball crawl_0.28.0.orig.tar.xz
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

TARBALL = "crawl_0.28.0.orig.tar.xz"
SHA256 = "5a6be168f8888b84bdb199184ca20bd8636f77ba7e9e0124ebee8850092f2f47"
RLTILES = "stone_soup-0.28.0/source/rltiles/"
CLASS_NAMES = ["hero", "monster", "item", "spell", "terrain"]
EXPECTED = {"hero": 319, "monster": 464, "item": 519, "spell": 505, "terrain": 1283}
HERO_MON = {"humanoids", "unique", "demihumanoids", "player"}
BODY_PARTS = {"tentacles", "mutantbeast"}
SPELL_GUI = {"spells", "invocations", "abilities"}
PREFIXES = ("i-", "dngn_", "spell_", "urand_", "spwpn_", "misc_")
REPO = Path(__file__).resolve().parents[1]
UNKNOWN_LICENSE = REPO.parent / "shared" / "data" / "TILES_UNDER_UNKNOWN_LICENSE.md"
SIZE = 32


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(work: Path) -> Path:
    """Fetch the orig tarball with apt-get source into ``work`` (private apt state)."""
    target = work / TARBALL
    if target.is_file():
        print(f"using cached {target}")
        return target
    parts, lists, cache = work / "parts", work / "lists", work / "cache"
    for d in (parts, lists / "partial", cache / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    system = Path("/etc/apt/sources.list.d/debian.sources").read_text()
    src = re.sub(r"(?m)^Types:.*$", "Types: deb-src", system)
    (parts / "debian.sources").write_text(src)
    opts = [
        "-o", "Dir::Etc::SourceList=/dev/null",
        "-o", f"Dir::Etc::SourceParts={parts}",
        "-o", f"Dir::State::Lists={lists}",
        "-o", f"Dir::Cache={cache}",
    ]  # fmt: skip
    subprocess.run(["apt-get", *opts, "update"], check=True)
    # The .debian.tar.xz may 404 (non-zero exit); only the orig tarball matters.
    subprocess.run(["apt-get", *opts, "source", "--download-only", "crawl"], cwd=work)
    if not target.is_file():
        sys.exit(f"apt-get source did not deliver {target}")
    return target


def unknown_license_names(path: Path) -> set[str]:
    """File names of every ``- something.png`` entry in the list, top level or indented.

    Entries are bare names (``arrow1.png``) or paths in older layouts (``rltiles/dc-mon/...``,
    ``crawl-ref/source/rltiles/...``); many tiles moved since, so match on the file name.
    """
    found = re.findall(r"(?m)^\s*-\s+(\S.*?\.png)\s*$", path.read_text(encoding="utf-8"))
    return {entry.rsplit("/", 1)[-1] for entry in found}


def classify(rel: str) -> str | None:
    """Class of a tile path relative to rltiles (``mon/dragons/fire_dragon.png``), or None."""
    parts = rel.split("/")
    top, sub, name = parts[0], (parts[1] if len(parts) > 2 else ""), parts[-1]
    if top == "player" and sub == "base":
        return "hero"
    if top == "mon":
        if sub in HERO_MON:
            return "hero"
        return None if sub in BODY_PARTS else "monster"
    if top == "item":
        return None if sub == "gold" or name.startswith("i-") else "item"
    if (top == "gui" and sub in SPELL_GUI) or top == "effect":
        return "spell"
    if top == "dngn":
        return "terrain"
    return None


def caption(rel: str) -> str:
    """``item/weapon/artefact/spwpn_wrath_of_trog.png`` -> ``wrath of trog``."""
    stem = rel.rsplit("/", 1)[-1].removesuffix(".png")
    for prefix in PREFIXES:
        if stem.startswith(prefix):
            stem = stem[len(prefix) :]
            break
    stem = re.sub(r"\d+(?=[_-]|$)", "", stem)  # trailing digits, also of inner words
    return " ".join(stem.replace("_", " ").replace("-", " ").lower().split())


def to_rgb(data: bytes) -> np.ndarray | None:
    """Decode a PNG, composite it on black and return (32, 32, 3) uint8, or None if not 32x32."""
    img = Image.open(io.BytesIO(data))
    if img.size != (SIZE, SIZE):
        return None
    rgba = img.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    canvas.alpha_composite(rgba)
    return np.asarray(canvas.convert("RGB"), dtype=np.uint8)


def read_tiles(tarball: Path, dropped: set[str]) -> tuple[dict[str, np.ndarray], Counter]:
    """Relative path -> image for every usable tile; also counts of what was skipped."""
    tiles: dict[str, np.ndarray] = {}
    skipped: Counter = Counter()
    with tarfile.open(tarball) as tf:
        for member in tf:
            if not (member.isfile() and member.name.startswith(RLTILES)):
                continue
            rel = member.name[len(RLTILES) :]
            name = rel.rsplit("/", 1)[-1]
            if not rel.endswith(".png") or name.startswith("._") or rel.startswith("UNUSED/"):
                continue
            if classify(rel) is None:
                continue
            if name in dropped:
                skipped["unknown licence"] += 1
                continue
            image = to_rgb(tf.extractfile(member).read())
            if image is None:
                skipped["not 32x32"] += 1
                continue
            tiles[rel] = image
    return tiles, skipped


def save_npz(out: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed, then rewrite the zip with fixed timestamps for stable bytes."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(fixed, src.read(info), compresslevel=9)


def build(tarball: Path, unknown_license: Path, out: Path, check: bool) -> None:
    digest = sha256(tarball)
    if digest != SHA256:
        sys.exit(f"sha256 mismatch for {tarball}: {digest} (expected {SHA256})")
    dropped = unknown_license_names(unknown_license)
    tiles, skipped = read_tiles(tarball, dropped)
    paths = sorted(tiles)
    labels = [CLASS_NAMES.index(classify(p)) for p in paths]
    counts = {c: labels.count(i) for i, c in enumerate(CLASS_NAMES)}
    print(f"{len(dropped)} listed file names; skipped: {dict(skipped)}")
    if check and counts != EXPECTED:
        sys.exit(f"class counts {counts} differ from expected {EXPECTED}; not writing")
    source = (
        f"Debian source package crawl 0.28.0 ({TARBALL}, sha256 {SHA256}), folder "
        "source/rltiles: Dungeon Crawl Stone Soup tiles (CC0; tiles of unclear licence "
        "dropped), 32x32 composited on black. See NOTICE-sprites.md."
    )
    save_npz(
        out,
        images=np.stack([tiles[p] for p in paths]).astype(np.uint8),
        labels=np.asarray(labels, dtype=np.int64),
        class_names=np.asarray(CLASS_NAMES, dtype=np.str_),
        captions=np.asarray([caption(p) for p in paths], dtype=np.str_),
        paths=np.asarray(paths, dtype=np.str_),
        source=np.asarray(source, dtype=np.str_),
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), {len(paths)} tiles")
    for i, name in enumerate(CLASS_NAMES):
        print(f"  {i} {name:<8} {counts[name]:5d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("src/tinydiffusion/assets/sprites.npz"))
    parser.add_argument("--tarball", type=Path, help=f"existing {TARBALL}; skips apt-get")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "tinydiffusion-crawl",
        help="download/cache folder for apt-get (reused on reruns)",
    )
    parser.add_argument("--unknown-license", type=Path, default=UNKNOWN_LICENSE)
    parser.add_argument(
        "--no-check", action="store_true", help="write even if class counts differ"
    )
    args = parser.parse_args()
    if args.tarball:
        tarball = args.tarball
    else:
        args.work.mkdir(parents=True, exist_ok=True)
        tarball = download(args.work.resolve())
    build(tarball, args.unknown_license, args.out, check=not args.no_check)


if __name__ == "__main__":
    main()
