"""The schema of an exported folder's ``config.json``: typed fields, ranges, no unknown keys.

Written out as small explicit tables (``MODEL``, ``SCHEDULE``, ``CONTEXT``, ``TOP``, ``EVALUATOR``)
of ``field: (required, check)``. A check returns the value or raises ``UsageError`` naming the field,
the value and what is allowed; ``check_config`` prefixes the file's name. The JSON itself is read
strictly: ``NaN``/``Infinity`` (which Python's ``json`` accepts), numbers that overflow to infinity
and duplicate keys are refused, so what passes is exactly what the tables say.
The ``from_dict`` of ``ModelConfig``, ``Schedule`` and ``ContextSpec`` validate their section with these
tables too, so library callers get the same checks as files. The checks themselves are ``schema.py``'s.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..checks import guidance_interval
from ..errors import UsageError, bad_value
from ..vocab import (ADAPTER_METHODS, ARCHS, CONTEXT_KINDS, DISTILL_METHODS, MAX_CAPTIONS, MAX_GUIDANCE, MAX_IMAGE_SIZE,
                     MAX_NAMES, MAX_T, MAX_TOKENS, MAX_WIDTH, PREDICTIONS, SAMPLERS, SCHEDULES)
from .schema import (Section, any_object, class_name, exactly, example, flag, kind_of, list_of, mapping_of, maybe,
                     number, one_of, section, shown, text, validate, whole)

MODEL_FORMAT, EVALUATOR_FORMAT = "tinydiffusion-model", "tinydiffusion-evaluator"
MAX_CONFIG_BYTES = 1 << 20  # ours are ~2 KB; a bigger file is not a config


# ---------------------------------------------------------------------- the tables
def sha256(name: str, value: Any) -> str:
    """A sha256 digest as 64 lowercase hexadecimal digits."""
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise bad_value(name, value, "a sha256 digest: 64 lowercase hexadecimal digits")
    return value


MODEL: Section = {
    "arch": (True, one_of(*ARCHS)),
    "image_size": (True, whole(4, MAX_IMAGE_SIZE)),
    "channels": (True, exactly(3, "3 (RGB: every image reader and writer here assumes it)")),
    "context_width": (True, whole(0, MAX_WIDTH)),
    "base": (True, whole(8, 1024)),
    "mults": (True, list_of(whole(1, 16), 1, 8)),
    "blocks": (True, whole(1, 16)),
    "attention": (False, list_of(whole(1, 8), 0, 8)),
    "dropout": (False, number(0, 1, high_open=True)),
    "T": (False, whole(1, MAX_T)),
    "context_tokens": (False, whole(0, MAX_TOKENS)),  # token rows after the pooled part of the context (text)
    "cross_attention": (False, list_of(whole(1, 16), 0, 8)),  # resolutions whose blocks attend over them
}
SCHEDULE: Section = {
    "kind": (True, one_of(*SCHEDULES)),
    "T": (True, whole(1, MAX_T)),
    "beta_start": (False, number(0, 1, low_open=True, high_open=True)),
    "beta_end": (False, number(0, 1, low_open=True, high_open=True)),
    "s": (False, number(0, 1)),
    "zero_terminal_snr": (False, flag),
}
CONTEXT: Section = {
    "kind": (True, one_of(*CONTEXT_KINDS)),
    "width": (True, whole(0, MAX_WIDTH)),
    "names": (False, list_of(class_name, 0, MAX_NAMES, distinct=True)),
    "encoder": (False, maybe(text)),
    "tokens": (False, whole(0, MAX_TOKENS)),  # text: token rows after the pooled row (0 or absent: pooled only)
}
RECOMMENDED: Section = {  # the model card's sampling settings: what sample, Pipeline.sample and the studio use
    "sampler": (True, one_of(*SAMPLERS)),
    "steps": (True, whole(1, MAX_T)),
    "guidance": (True, number(0, MAX_GUIDANCE)),  # with a guide (and no guide_scale): autoguidance's scale
    "guidance_interval": (False, lambda name, value: list(guidance_interval(value, name))),  # (lo, hi] of (t+1)/T
    "guide": (False, text),  # autoguidance's guide: a model folder relative to this one's, or a shipped name
    "guide_scale": (False, number(0, MAX_GUIDANCE)),  # the guide beside classifier-free guidance, at this scale
    "snap": (False, number(0, 1)),  # text: how far each prompt moves to the nearest training caption (snap.py)
}
DISTILLED: Section = {  # a few-step student (distill.py): what it was distilled for, which sample enforces
    "method": (True, one_of(*DISTILL_METHODS)),
    "sampler": (True, one_of(*SAMPLERS)),
    "steps": (True, list_of(whole(1, MAX_T), 1, 64, distinct=True)),
    "guidance": (True, number(0, MAX_GUIDANCE)),
    "teacher": (False, text),
    "teacher_sampler": (False, one_of(*SAMPLERS)),
    "teacher_steps": (False, whole(1, MAX_T)),
}
ADAPTER: Section = {  # a fine-tune's adapter (training/finetune.py): the base it is merged into, checked by hash
    "base": (True, text),  # a shipped model's name or the base folder's absolute path
    "base_sha256": (True, sha256),  # of the base's model.safetensors
    "method": (True, one_of(*ADAPTER_METHODS)),
    "rank": (False, whole(1, 1024)),
    "alpha": (False, number(0, 1e6, low_open=True)),
    "new_classes": (False, list_of(class_name, 0, MAX_NAMES, distinct=True)),
}
TOP: Section = {
    "format": (False, one_of(MODEL_FORMAT)),
    "version": (False, text),
    "model": (True, section(MODEL)),
    "schedule": (True, section(SCHEDULE)),
    "context": (False, section(CONTEXT)),
    "prediction": (False, one_of(*PREDICTIONS)),
    "examples": (False, list_of(example, 0, 64)),
    "captions": (False, list_of(text, 1, MAX_CAPTIONS, distinct=True)),  # text: the distinct training captions
    "training": (False, any_object),  # the run's settings, kept for the record; only "data" is read back
    "shipped_as": (False, text),
    "recommended": (False, section(RECOMMENDED)),
    "distilled": (False, section(DISTILLED)),
    "adapter": (False, section(ADAPTER)),
}
EVALUATOR: Section = {
    "format": (True, one_of(EVALUATOR_FORMAT)),
    "version": (False, text),
    "class_names": (True, list_of(text, 1, MAX_NAMES, distinct=True)),
    "size": (True, whole(8, MAX_IMAGE_SIZE)),
    "width": (True, whole(8, 1024, multiple_of=8)),  # GroupNorm(8, width)
    "members": (True, whole(1, 64)),
    "holdout_accuracy": (False, mapping_of(number(0, 1))),
    "holdout_count": (False, whole(0, 2**53)),
    "train_seconds": (False, number(0, 1e9)),
    "training": (False, any_object),
    "weights_dtype": (False, one_of("float32", "float16", "bfloat16")),
}


# ---------------------------------------------------------------------- whole files
def read_json(file: Path, what: str = "model config") -> dict[str, Any]:
    """A JSON object from ``file``, strictly: UTF-8, at most 1 MiB, finite numbers, no duplicate keys."""
    try:
        size = file.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise UsageError(f"{what} {file} is {size:,} bytes; expected a config.json of at most "
                             f"{MAX_CONFIG_BYTES:,} bytes")
        raw = file.read_bytes()
    except OSError as e:
        raise UsageError(f"{what} {file} could not be read: {e.strerror or e}") from None
    try:
        config = json.loads(raw.decode("utf-8-sig"), parse_constant=_refuse_constant, parse_float=_finite_float,
                            object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UsageError(f"{what} {file} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{what} {file} holds {kind_of(config)}{shown(config)}; expected a JSON object")
    return config


def check_config(config: dict[str, Any], file: Path) -> dict[str, Any]:
    """A model's or an evaluator's config (by its ``format``), with the file named in every refusal."""
    try:
        if config.get("format") == EVALUATOR_FORMAT:
            return validate(config, EVALUATOR, "")
        config = validate(config, TOP, "")
        _consistent(config)
        return config
    except UsageError as e:
        raise UsageError(f"model config {file}: {e}") from None


def _consistent(config: dict[str, Any]) -> None:
    """What the sections must agree on: the network's context width and step count."""
    model, schedule = config["model"], config["schedule"]
    context = config.get("context", {"kind": "none", "width": 0})
    if model["context_width"] != context["width"]:
        raise UsageError(f"model.context_width={model['context_width']} disagrees with "
                         f"context.width={context['width']}; expected the same width in both")
    if model.get("context_tokens", 0) != context.get("tokens", 0):
        raise UsageError(f"model.context_tokens={model.get('context_tokens', 0)} disagrees with "
                         f"context.tokens={context.get('tokens', 0)}; expected the same token rows in both")
    if "T" in model and model["T"] != schedule["T"]:
        raise UsageError(f"model.T={model['T']} disagrees with schedule.T={schedule['T']}; "
                         f"expected the same number of diffusion steps in both")
    steps = config.get("recommended", {}).get("steps")
    if steps is not None and steps > schedule["T"]:
        raise bad_value("recommended.steps", steps, f"at most schedule.T = {schedule['T']}")
    distilled, card = config.get("distilled"), config.get("recommended")
    if distilled:
        if max(distilled["steps"]) > schedule["T"]:
            raise bad_value("distilled.steps", distilled["steps"], f"step counts of at most schedule.T = {schedule['T']}")
        if card and (card["sampler"] != distilled["sampler"] or card["steps"] not in distilled["steps"]
                     or card["guidance"] != distilled["guidance"]):
            raise UsageError(f"recommended {card} disagrees with distilled (sampler {distilled['sampler']}, steps "
                             f"{distilled['steps']}, guidance {distilled['guidance']}); expected settings it was "
                             f"distilled for")



def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number (NaN and Infinity are refused)")


def _finite_float(text_: str) -> float:
    value = float(text_)
    if not math.isfinite(value):
        raise ValueError(f"{text_} overflows to infinity")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} appears twice in one object (which one counts is ambiguous)")
        seen[key] = value
    return seen
