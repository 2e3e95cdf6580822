"""Build ``benchmarks/smileys/``: the concept the fine-tuning study teaches the shipped ``sprites`` model.

Round yellow-family face emoji (Noto Emoji, Apache-2.0), a concept the sprites model never saw: each one
alpha-composited on black (the sprites' background) and LANCZOS-downscaled 64 → 32 px, saved as PNG. A fixed
seed deals 20 of them to ``teach/`` (what ``finetune --data`` gets) and the rest to ``holdout/`` (kept aside:
the report's and the study's recognition reference). ``NOTICE.md`` beside them credits the source.

This script is run once by a developer; its output is committed. Rebuild (from the repository root)::

    python scripts/build_smileys.py                       # runs npm install into a temporary folder
    python scripts/build_smileys.py --package-dir DIR     # DIR holds emoji.json and img/ of the npm package

Source: npm ``emoji-datasource-google@16.0.0`` (as ``scripts/build_emoji.py``): Noto Emoji images by Google,
Apache-2.0; ``emoji.json`` metadata by iamcal/emoji-data, MIT.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

NPM_PACKAGE, NPM_VERSION = "emoji-datasource-google", "16.0.0"
# the face subcategories of "Smileys & Emotion" whose faces are round (costume, cat and monkey faces, hearts and
# the emotion symbols left out)
SUBCATEGORIES = ("face-smiling", "face-affection", "face-tongue", "face-hand", "face-neutral-skeptical",
                 "face-sleepy", "face-unwell", "face-hat", "face-glasses", "face-concerned")
SIZE, TEACH, SEED = 32, 20, 0


def install_package() -> Path:
    prefix = Path(tempfile.mkdtemp(prefix="emoji-npm-"))
    subprocess.run(["npm", "install", "--no-save", "--prefix", str(prefix), f"{NPM_PACKAGE}@{NPM_VERSION}"], check=True)
    return prefix / "node_modules" / NPM_PACKAGE


def faces(package_dir: Path) -> list[dict]:
    entries = json.loads((package_dir / "emoji.json").read_text(encoding="utf-8"))
    kept = [e for e in entries if e["category"] == "Smileys & Emotion" and e["subcategory"] in SUBCATEGORIES
            and e.get("has_img_google", True) and (package_dir / "img" / "google" / "64" / e["image"]).is_file()]
    return sorted(kept, key=lambda e: (e.get("sort_order", 0), e["unified"]))


def on_black(path: Path) -> Image.Image:
    """RGBA composited on black, LANCZOS-downscaled to SIZE × SIZE RGB."""
    rgba = Image.open(path).convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB").resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def build(package_dir: Path, out: Path) -> None:
    entries = faces(package_dir)
    order = np.random.default_rng(SEED).permutation(len(entries))
    for folder in ("teach", "holdout"):
        shutil.rmtree(out / folder, ignore_errors=True)
        (out / folder).mkdir(parents=True)
    for rank, i in enumerate(order):
        e = entries[i]
        folder = "teach" if rank < TEACH else "holdout"
        name = e["short_name"].replace(" ", "_")
        on_black(package_dir / "img" / "google" / "64" / e["image"]).save(out / folder / f"{name}.png", optimize=True)
    print(f"wrote {TEACH} pictures to {out / 'teach'} and {len(entries) - TEACH} to {out / 'holdout'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/smileys"))
    parser.add_argument("--package-dir", type=Path, default=None, help="installed emoji-datasource-google folder")
    args = parser.parse_args()
    build(args.package_dir or install_package(), args.out)


if __name__ == "__main__":
    main()
