"""Build ``src/tinydiffusion/assets/emoji.npz``: Noto emoji with text captions.

This script is run once by a developer; the resulting ``.npz`` is committed.
Users and CI never need npm or this script.

Source: npm ``emoji-datasource-google@16.0.0`` (Noto Emoji images, Apache-2.0;
``emoji.json`` metadata by iamcal, MIT). Captions are CLDR short names from the
PyPI ``emoji`` package (BSD), falling back to ``emoji.json``'s ``name``.
Alternative captions (``alt_captions``, "|" between them): the name, "a NAME", "NAME emoji", the
emoji's CLDR keywords from npm ``cldr-annotations-full@48.2.0`` (Unicode-3.0) and the last word of its
subcategory; training draws one per step, so a caption vector is not tied to one image.
``split``: HELD_OUT_SHARE of each category (seeded) is held out: training never sees those images or
captions, and ``eval`` measures prompt following on them.

Rebuild (from the repository root, in a venv with numpy, Pillow and emoji)::

    python -m venv /tmp/emojivenv
    /tmp/emojivenv/bin/pip install numpy pillow emoji
    /tmp/emojivenv/bin/python scripts/build_emoji.py

Pass ``--package-dir DIR`` to reuse an installed copy of the npm package
(the folder holding ``emoji.json`` and ``img/``) instead of running npm.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import emoji
import numpy as np
from PIL import Image

NPM_PACKAGE = "emoji-datasource-google"
NPM_VERSION = "16.0.0"
CLDR_PACKAGE, CLDR_VERSION = "cldr-annotations-full", "48.2.0"
HELD_OUT_SHARE, SPLIT_SEED = 0.1, 0
DROPPED_CATEGORIES = {"Flags", "Component"}
SIZE = 32


def install_package(name: str = NPM_PACKAGE, version: str = NPM_VERSION) -> Path:
    """Install an npm package into a fresh temporary prefix and return its folder."""
    prefix = Path(tempfile.mkdtemp(prefix="emoji-npm-"))
    subprocess.run(["npm", "install", "--no-save", "--prefix", str(prefix), f"{name}@{version}"], check=True)
    return prefix / "node_modules" / name


def cldr_keywords(cldr_dir: Path) -> dict[str, list[str]]:
    """Emoji character -> its CLDR English keywords (and its text-to-speech name)."""
    data = json.loads((cldr_dir / "annotations" / "en" / "annotations.json").read_text(encoding="utf-8"))
    return {char: list(a.get("default", [])) + list(a.get("tts", []))
            for char, a in data["annotations"]["annotations"].items()}


def alternatives(entry: dict, name: str, keywords: dict[str, list[str]]) -> list[str]:
    """The captions of one emoji, its name first: templates a user would type, then its keywords."""
    char = to_chars(entry["unified"])
    words = keywords.get(char) or keywords.get(char.replace("\ufe0f", "")) or []
    last = entry.get("subcategory", "").split("-")[-1]
    topic = [last] if last.isalpha() and last != "other" else []  # "food-fruit" -> fruit
    out = [name, f"a {name}", f"{name} emoji", *(clean(w) for w in words), *topic]
    return list(dict.fromkeys(c for c in out if c and "|" not in c))


def held_out(labels: list[int]) -> np.ndarray:
    """int8 [N]: 1 for HELD_OUT_SHARE of each category (at least one), drawn with SPLIT_SEED."""
    rng, labels = np.random.default_rng(SPLIT_SEED), np.asarray(labels)
    split = np.zeros(len(labels), np.int8)
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        split[idx[:max(1, round(HELD_OUT_SHARE * len(idx)))]] = 1
    return split


def load_entries(package_dir: Path) -> list[dict]:
    """Top-level emoji.json entries that have a Google image, minus dropped categories.

    Skin-tone variants (``skin_variations``) are not separate entries and are ignored.
    """
    entries = json.loads((package_dir / "emoji.json").read_text(encoding="utf-8"))
    kept = [
        e
        for e in entries
        if e["category"] not in DROPPED_CATEGORIES
        and e.get("has_img_google", True)
        and (package_dir / "img" / "google" / "64" / e["image"]).is_file()
    ]
    kept.sort(key=lambda e: (e.get("sort_order", 0), e["unified"]))
    return kept


def clean(text: str) -> str:
    """Strip colons, turn underscores into spaces, lowercase, collapse whitespace."""
    return " ".join(text.replace(":", " ").replace("_", " ").lower().split())


def to_chars(codepoints: str) -> str:
    return "".join(chr(int(cp, 16)) for cp in codepoints.split("-"))


def cldr_name(entry: dict) -> str | None:
    """CLDR name from the ``emoji`` package, trying qualified and unqualified forms."""
    char = to_chars(entry["unified"])
    candidates = [char, char.replace("\ufe0f", ""), char[0] + "\ufe0f" + char[1:]]
    if entry.get("non_qualified"):
        candidates.append(to_chars(entry["non_qualified"]))
    for cand in candidates:
        data = emoji.EMOJI_DATA.get(cand)
        if data and data.get("en"):
            return clean(data["en"])
    return None


def load_image(path: Path) -> np.ndarray:
    """Composite an RGBA image on white and LANCZOS-downscale it to SIZE x SIZE RGB."""
    rgba = Image.open(path).convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    small = canvas.convert("RGB").resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.uint8)


def build(package_dir: Path, cldr_dir: Path, out: Path) -> None:
    entries = load_entries(package_dir)
    keywords = cldr_keywords(cldr_dir)
    class_order: list[str] = []
    for e in entries:
        if e["category"] not in class_order:
            class_order.append(e["category"])
    class_names = [c.lower() for c in class_order]

    images, labels, captions, paths, alts = [], [], [], [], []
    fallbacks: list[str] = []
    for e in entries:
        images.append(load_image(package_dir / "img" / "google" / "64" / e["image"]))
        labels.append(class_order.index(e["category"]))
        name = cldr_name(e)
        if name is None:
            name = clean(e["name"])
            fallbacks.append(f"{e['unified']} -> {name!r}")
        captions.append(name)
        alts.append("|".join(alternatives(e, name, keywords)))
        paths.append(e["unified"])

    source = (
        f"npm {NPM_PACKAGE}@{NPM_VERSION} (Noto Emoji images by Google, Apache-2.0; "
        f"emoji.json metadata by iamcal/emoji-data, MIT); captions: CLDR names from "
        f"PyPI emoji=={emoji.__version__} (BSD-3-Clause), fallback emoji.json name; alternative captions: "
        f"npm {CLDR_PACKAGE}@{CLDR_VERSION} keywords (Unicode-3.0); split: {HELD_OUT_SHARE:g} held out per "
        f"category (seed {SPLIT_SEED}); "
        f"composited on white, LANCZOS 64->{SIZE}. See NOTICE-emoji.md."
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        images=np.stack(images).astype(np.uint8),
        labels=np.asarray(labels, dtype=np.int64),
        class_names=np.asarray(class_names, dtype=np.str_),
        captions=np.asarray(captions, dtype=np.str_),
        paths=np.asarray(paths, dtype=np.str_),
        alt_captions=np.asarray(alts, dtype=np.str_),
        split=held_out(labels),
        source=np.asarray(source, dtype=np.str_),
    )
    report(out, class_names, labels, captions, fallbacks)


def report(
    out: Path, class_names: list[str], labels: list[int], captions: list[str], fallbacks: list[str]
) -> None:
    counts = Counter(labels)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), {len(labels)} emoji")
    for i, name in enumerate(class_names):
        print(f"  {i} {name:<20} {counts[i]:5d}")
    print(f"caption fallbacks (emoji.json name): {len(fallbacks)}")
    for line in fallbacks:
        print(f"  {line}")
    step = max(1, len(captions) // 10)
    print("sample captions:", ", ".join(repr(c) for c in captions[::step][:10]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("src/tinydiffusion/assets/emoji.npz"))
    parser.add_argument(
        "--package-dir", type=Path, default=None, help="installed emoji-datasource-google folder"
    )
    parser.add_argument("--cldr-dir", type=Path, default=None, help="installed cldr-annotations-full folder")
    args = parser.parse_args()
    package_dir = args.package_dir or install_package()
    cldr_dir = args.cldr_dir or install_package(CLDR_PACKAGE, CLDR_VERSION)
    build(package_dir, cldr_dir, args.out)


if __name__ == "__main__":
    main()
