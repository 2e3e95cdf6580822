"""What a fine-tune trains on: the user's pictures of the concept, read as training reads folders, mixed with
replayed images of the base model's own training data (against forgetting) into one ``.npz`` training set.

The mix is drawn uniformly by the training loop (``balance`` off), so its rows set each batch's shares: the
concept's images repeated to ``1 - replay`` of the rows, the base's images to ``replay``, the same number from
each of its classes (as the base was trained, class-balanced).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.load import load_dataset
from ..data.sources import IMAGE_SUFFIXES, Dataset, read_npz
from ..errors import UsageError, bad_value
from ..store.imagefile import read_image, resize_square

MIN_IMAGES = 8  # fewer pictures than this teach a copy, not a concept (20 is the measured case)
MAX_IMAGES = 10_000
REPLAY_PER_CLASS = 256  # replayed base images per class in the mix (unlabelled data: four times this in all)


@dataclass(frozen=True, eq=False)
class Concept:
    """The pictures of the new concept at the base model's size, with their captions (text models)."""

    images: np.ndarray  # uint8 [N, S, S, 3]
    names: list[str]  # where each came from (file names relative to the folder, or "row i" of an .npz)
    captions: list[str] | None

    def digest(self) -> str:
        """sha256 over the pixels and captions: what a resume must bring again."""
        h = hashlib.sha256(self.images.tobytes())
        h.update(json.dumps(self.captions).encode())
        return h.hexdigest()


def check_base(base, model: str, name: str | None, method: str, prompt: str | None) -> str:
    """What the base allows: the new class's name, or the refusal that says what would work."""
    if base.distilled:
        teacher = base.distilled.get("teacher") or "its teacher"
        raise UsageError(f"model {model} is a distilled student (guidance folded in, {base.distilled['steps']} "
                         f"step(s) only): fine-tuning it would undo what it was distilled for; fine-tune its teacher "
                         f"and distil the result: tinydiffusion finetune {teacher} … --out RUN, then tinydiffusion "
                         f"distill RUN/model")
    kind = base.context.kind
    if kind in ("none", "vector"):
        raise UsageError(f"model {model} has a {kind!r} context: nothing names a new concept there; fine-tune "
                         f"a class model (--class NAME) or a text model (--prompt \"…\")")
    if kind == "class":
        if name is None:
            raise bad_value("class", None, f"the new class's name (model {model} has the classes "
                            f"{', '.join(base.context.names)})")
        if name in base.context.names:
            raise bad_value("class", name, f"a name the model does not have yet (it has "
                            f"{', '.join(base.context.names)})")
        if prompt is not None:
            raise bad_value("prompt", prompt, f"no prompt or captions: model {model} "
                            f"is a class model, the new class is --class {name}")
    elif method == "column":
        raise bad_value("method", "column", f"lora or full: model {model} is a text model, its context comes "
                        f"from a text encoder and has no class columns to add")
    return name or "concept"


def base_data(base, model: str, replay_data: str | None) -> tuple[Dataset, str]:
    """The base's training data (replayed, and the report's real images), at the base's size."""
    source = replay_data or (base.config.get("training") or {}).get("data")
    if not source:
        raise bad_value("replay_data", None, f"the data model {model} was trained on (its config.json does not "
                        f"record it); pass --replay-data")
    try:
        dataset = load_dataset(str(source), size=base.image_size)
    except UsageError as e:
        raise UsageError(f"the base's training data {source!r} (replayed against forgetting, and the report's real "
                         f"images) could not be loaded: {e}; pass --replay-data with data like it") from None
    if base.context.kind == "class" and tuple(dataset.class_names) != tuple(base.context.names):
        raise bad_value("replay_data", str(source), f"data with the base's classes {list(base.context.names)} (it has "
                        f"{list(dataset.class_names)})")
    return dataset, str(source)


def read_concept(source: str, size: int, *, param: str = "data", prompt: str | None = None,
                 captions: str | None = None, minimum: int = MIN_IMAGES) -> Concept:
    """The pictures in ``source``: a folder of PNG/JPEG files (sub-folders included, in name order) or an ``.npz``
    with an ``images`` array; each one RGB on black, centre-cropped and resized to ``size`` as training reads a
    folder. Captions: ``prompt`` for every picture, else the ``captions`` file (a JSON object ``{file name:
    caption}``), else an ``.npz``'s ``captions``; ``None`` when none is given."""
    path = Path(str(source))
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                       and not any(part.startswith(".") for part in f.relative_to(path).parts))
        _count(param, source, len(files), minimum)
        images = np.stack([read_image(f, size) for f in files])
        names, stored = [str(f.relative_to(path)) for f in files], None
    elif path.suffix == ".npz" and path.is_file():
        arrays = read_npz(path, f"{param} file {path}")
        images = arrays.get("images")
        if images is None or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise bad_value(param, str(path), "an .npz whose 'images' array is uint8 N×H×W×3")
        _count(param, source, len(images), minimum)
        if images.shape[1:3] != (size, size):
            images = np.stack([np.asarray(resize_square(Image.fromarray(im), size)) for im in images])
        names = [f"row {i}" for i in range(len(images))]
        stored = [str(c) for c in arrays["captions"]] if "captions" in arrays else None
    else:
        raise bad_value(param, source, "a folder of PNG/JPEG pictures of the concept, or an .npz with an 'images' "
                        "array" + ("" if path.exists() else " (that path does not exist)"))
    return Concept(images, names, _captions(names, prompt, captions, stored))


def _count(param: str, source: str, n: int, minimum: int) -> None:
    if not minimum <= n <= MAX_IMAGES:
        raise bad_value(param, source, f"at least {minimum} pictures of the concept (20 is the measured case) and "
                        f"at most {MAX_IMAGES:,}; it holds {n} PNG/JPEG picture{'s' if n != 1 else ''}")


def _captions(names: list[str], prompt: str | None, file: str | None, stored: list[str] | None) -> list[str] | None:
    if prompt is not None:
        return [prompt] * len(names)
    if file is None:
        return stored
    try:
        table = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise bad_value("captions", file, f"a readable JSON file {{\"picture.png\": \"caption\", …}} ({e})") from None
    if not isinstance(table, dict) or not all(isinstance(v, str) and v.strip() for v in table.values()):
        raise bad_value("captions", file, "a JSON object mapping each picture's file name to a non-empty caption")
    missing = [n for n in names if n not in table and Path(n).name not in table]
    if missing:
        raise bad_value("captions", file, f"a caption for every picture; none for {', '.join(missing[:3])}"
                        f"{' and more' if len(missing) > 3 else ''}")
    return [table.get(n, table.get(Path(n).name)) for n in names]


def replay_rows(dataset: Dataset, per_class: int, seed: int) -> np.ndarray:
    """Indices of the base's images to replay: ``per_class`` from each class (all of a smaller class, repeated to
    fill), or ``4 × per_class`` from an unlabelled set; the same for a given seed."""
    rng = np.random.default_rng([seed, 7])
    groups = [np.arange(len(dataset))] if dataset.labels is None else \
        [np.flatnonzero(dataset.labels == k) for k in range(len(dataset.class_names))]
    want = 4 * per_class if dataset.labels is None else per_class
    rows = []
    for idx in (g for g in groups if len(g)):
        take = rng.permutation(idx)[:want]
        if len(take) < want:
            take = np.concatenate([take, rng.choice(idx, want - len(take))])
        rows.append(np.sort(take))
    return np.concatenate(rows)


def mix(concept: Concept, replay: Dataset | None, rows: np.ndarray, share: float, names: list[str], new: int,
        batch_size: int) -> dict[str, np.ndarray]:
    """The training set of a fine-tune as ``.npz`` arrays: the replayed rows, then the concept's pictures repeated
    so that they are ``1 - share`` of the rows (and at least four batches' worth in all). ``names``: the class
    names with the new one at index ``new``: last for a class model (its new context column), first for a text
    model (so that the training grids, which show the first image of each of up to eight labels, show it)."""
    n_old = 0 if replay is None else len(rows)
    n_new = max(1, round(n_old * (1 - share) / share / len(concept.images))) if n_old else 1
    n_new = max(n_new, -(-max(0, 4 * batch_size - n_old) // len(concept.images)))
    repeat = np.tile(np.arange(len(concept.images)), n_new)
    images = [concept.images[repeat]]
    labels = [np.full(len(repeat), new, np.int64)]
    captions = None if concept.captions is None else [np.array(concept.captions)[repeat]]
    if n_old:
        images.insert(0, replay.images[rows])
        old = np.zeros(len(rows), np.int64) if replay.labels is None else replay.labels[rows]
        labels.insert(0, old + (old >= new))  # the old classes around the new one
        if captions is not None:
            if replay.captions is None:
                raise UsageError(f"the replay data {replay.name!r} has no captions: a text model's fine-tune replays "
                                 f"captioned images (pass --replay-data with captions, or --replay 0)")
            captions.insert(0, replay.captions[rows].astype(str))
    out = {"images": np.concatenate(images), "labels": np.concatenate(labels), "class_names": np.array(names)}
    if captions is not None:
        out["captions"] = np.concatenate(captions)
    return out
