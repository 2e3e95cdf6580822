"""The model card: the sampling settings a model recommends (``config.json`` ``recommended``) and, for a
distilled student, the only ones it supports (``distilled``). One resolver serves the library, the CLI and
the studio, so a setting left out means the same everywhere.

Resolution: a sampler, step count or guidance scale that is given wins; one left out comes from the card;
steps left out come from the card when the sampler is the card's (given or not), else from the sampler's
own default (``vocab.DEFAULT_STEPS``). A model exported without a card recommends the textbook DDPM over
all ``T`` steps, unguided. The guidance levers resolve the same way: a guidance interval (``interval``) and an
autoguidance guide (``guide``) given win, else the card's (``recommended.guidance_interval``, ``.guide``);
``(0, 1)`` and ``"none"`` switch a card's off. With a guide, ``guidance`` is autoguidance's scale, unless a
``guide_scale`` is given or carded: then the guide stands beside the unconditional branch, autoguidance at
``guide_scale`` under classifier-free guidance at ``guidance`` (``core/guidance.py``, ``autoguided_cfg``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import checks
from ..errors import UsageError, bad_value
from ..vocab import GUIDANCE_EVERYWHERE, NO_GUIDE, SAMPLERS, UNGUIDED, default_steps

TRAINED_SAMPLER, TRAINED_STEPS, TRAINED_GUIDANCE = "dpmpp_2m", 10, 3.0  # what train writes on a new model's card
CARD_LEVERS = ("guidance_interval", "guide", "guide_scale", "snap")  # optional settings a card may recommend


def recommended(config: dict[str, Any]) -> dict[str, Any]:
    """The card's ``{"sampler", "steps", "guidance"}`` (and the ``CARD_LEVERS`` it has);
    DDPM over all T, unguided, when the model has none."""
    card = config.get("recommended") or {}
    return {"sampler": card.get("sampler", "ddpm"), "steps": card.get("steps"),
            "guidance": float(card.get("guidance", UNGUIDED)),
            **{key: card[key] for key in CARD_LEVERS if key in card}}


def resolve(config: dict[str, Any], sampler: str | None = None, steps: int | None = None,
            guidance: float | None = None, T: int | None = None) -> tuple[str, int | None, float]:
    """``(sampler, steps, guidance)`` of a request on the model whose ``config.json`` is ``config`` (and whose
    schedule has ``T`` steps, default the config's): what is given, else the card's; steps of the card only with
    its sampler, else the sampler's own default."""
    card = recommended(config)
    sampler = card["sampler"] if sampler is None else sampler
    if steps is None and sampler == card["sampler"]:
        steps = card["steps"]
    if steps is None and sampler in SAMPLERS:
        steps = default_steps(sampler, int(config["schedule"]["T"] if T is None else T))
    return sampler, steps, card["guidance"] if guidance is None else guidance


def interval(config: dict[str, Any], given: Any = None) -> tuple[float, float] | None:
    """The guidance interval ``(lo, hi)`` of a request (``core/guidance.py``: guided where ``(t + 1) / T`` is in
    ``(lo, hi]``): ``given`` wins, else the card's; checked. ``None``: guidance everywhere (none, or ``(0, 1)``)."""
    value = recommended(config).get("guidance_interval") if given is None else given
    if value is None:
        return None
    value = checks.guidance_interval(value)
    return None if value == GUIDANCE_EVERYWHERE else value


def guide(config: dict[str, Any], given: Any = None) -> tuple[Any, bool]:
    """``(guide, from the card)`` of a request: ``given`` (a loaded Pipeline, a model folder or a shipped name) wins
    and ``"none"`` is none; else the card's ``recommended.guide`` (a folder relative to the model's, or a shipped
    name). The caller loads it (``Pipeline.load_guide``) and checks that it fits (``check_guide``)."""
    carded = given is None
    given = recommended(config).get("guide") if carded else given
    if isinstance(given, (str, Path)):
        if not str(given).strip():
            raise bad_value("guide", given, f"a model folder or a shipped name (or {NO_GUIDE!r}: no guide)")
        if str(given).strip().lower() == NO_GUIDE:
            return None, False
    return given, carded and given is not None


def guide_scale(config: dict[str, Any], given: Any = None, guide: Any = None) -> float | None:
    """Autoguidance's own scale when the guide stands beside the unconditional branch: ``given`` wins, else the
    card's ``recommended.guide_scale``; ``None``: the guide replaces the unconditional branch (``guidance`` is then
    its scale). Refused without a ``guide`` (as resolved by ``guide``) when given: it scales the guide's pull."""
    if given is None:
        value = recommended(config).get("guide_scale")
        return None if value is None or guide is None else checks.guidance(value, "guide_scale")
    value = checks.guidance(given, "guide_scale")
    if guide is None:
        raise bad_value("guide_scale", given, "a scale for an autoguidance guide: give guide (--guide MODEL) too, "
                                              "or leave guide_scale out")
    return value


def snap(config: dict[str, Any], given: Any = None) -> float:
    """How far each text prompt moves toward its nearest training caption (``conditioning/snap.py``): ``given``
    wins, else the card's ``recommended.snap``, else 0 (the prompt as typed). Refused above 0 for a model whose
    card lists no training captions."""
    value = recommended(config).get("snap", 0.0) if given is None else given
    value = checks.snap(value)
    if value and not config.get("captions"):
        raise bad_value("snap", given if given is not None else value,
                        "0 for this model: snapping needs a text model whose card lists the captions it was trained "
                        "on (models trained on captions export them)")
    return float(value)


def check_guide(config: dict[str, Any], guide_config: dict[str, Any], where: str) -> None:
    """Refuse a guide (whose ``config.json`` is ``guide_config``, found at ``where``) that cannot guide the model of
    ``config``: a distilled student, or another image size, context, schedule or prediction."""
    if guide_config.get("distilled"):
        raise bad_value("guide", where, "an ordinary model: a distilled student has guidance folded in and samples "
                                        "only in its own settings")
    none = {"kind": "none", "width": 0}
    for what, mine, its in (("image size", config["model"]["image_size"], guide_config["model"]["image_size"]),
                            ("context", config.get("context", none), guide_config.get("context", none)),
                            ("schedule", config["schedule"], guide_config["schedule"]),
                            ("prediction", config.get("prediction", "eps"), guide_config.get("prediction", "eps"))):
        if mine != its:
            raise bad_value("guide", where, f"a model with this model's {what} ({mine}); the guide's is {its}: "
                                            f"autoguidance needs a weaker model of the same task (the same recipe "
                                            f"trained for fewer steps, or a smaller preset)")


def for_training(context_kind: str, p_uncond: float, T: int) -> dict[str, Any]:
    """The card a training run writes: DPM-Solver++(2M) in 10 steps, guided (3) when the network also learned the
    unconditional model (context dropout); the compare table and the recipe study measured these best."""
    guided = context_kind != "none" and p_uncond > 0
    return {"sampler": TRAINED_SAMPLER, "steps": min(TRAINED_STEPS, T),
            "guidance": TRAINED_GUIDANCE if guided else UNGUIDED}


def check_distilled(distilled: dict[str, Any] | None, sampler: str, steps: int | None, guidance: float,
                    guidance_rescale: float = 0.0, options: dict[str, Any] | None = None, *,
                    interval: tuple[float, float] | None = None, guide: Any = None) -> None:
    """Refuse, naming the setting, what a student with this ``distilled`` card was not trained for: another
    sampler, step count or guidance scale (it is inside the network), guidance rescale, a guidance interval or
    an autoguidance guide (as resolved by ``interval`` and ``guide``), another time grid, DDIM noise. ``None``
    (an ordinary model) passes. The studio calls it before any weights are read."""
    d, options = distilled, options or {}
    if not d:
        return
    counts = ", ".join(map(str, d["steps"]))
    what = (f"this model is a student distilled ({d['method']}) for the {d['sampler']} sampler in {counts} "
            f"step(s) with guidance {d['guidance']:g} folded into the network")
    if sampler != d["sampler"]:
        raise UsageError(f"sampler={sampler!r} is not one this model supports: {what} (omit the sampler to use it)")
    if steps not in d["steps"]:
        raise UsageError(f"steps={steps!r} is not one this model supports: {what}")
    if guidance != d["guidance"]:
        raise UsageError(f"guidance={guidance:g} is not one this model supports: {what}; another scale needs "
                         f"another distillation (tinydiffusion distill TEACHER --guidance W)")
    if guidance_rescale:
        raise UsageError(f"guidance_rescale={guidance_rescale:g} is not one this model supports: {what}")
    if interval is not None:
        raise UsageError(f"guidance_interval={list(interval)} is not one this model supports: {what}, at every "
                         f"step (omit it, or use the teacher)")
    if guide is not None:
        shown = guide if isinstance(guide, (str, Path)) else "a loaded Pipeline"
        raise UsageError(f"guide={str(shown)!r} is not one this model supports: {what} (omit the guide, or "
                         f"autoguide the teacher)")
    if options.get("spacing", "trailing") != "trailing":
        raise bad_value("spacing", options["spacing"], "'trailing' (the grid this student was distilled on)")
    if options.get("eta", 0):
        raise bad_value("eta", options["eta"], "0: this student was distilled for deterministic DDIM steps")


def check_inpaintable(distilled: dict[str, Any] | None) -> None:
    """Refuse inpainting with a student: RePaint walks DDPM steps, which a student was not distilled for."""
    if distilled:
        raise bad_value("mask", "a mask (inpainting: RePaint over DDPM steps)",
                        f"no mask with this model: it is a student distilled for the {distilled['sampler']} sampler in "
                        f"{', '.join(map(str, distilled['steps']))} step(s) only, and students cannot inpaint; omit "
                        f"the mask (img2img), or inpaint with its teacher ({distilled.get('teacher', 'the teacher')})")


def parse_setting(text: str) -> tuple[str, int]:
    """``"ddim:50"`` to ``("ddim", 50)``; anything else is refused naming it (steps <= T is checked with the model)."""
    name, colon, steps = str(text).partition(":")
    steps = steps.strip()
    if not colon or name.strip() not in SAMPLERS or not (steps.isascii() and steps.isdigit()) or int(steps) < 1:
        raise bad_value("settings", text, f"SAMPLER:STEPS such as ddim:50 or dpmpp_2m:10, with SAMPLER one of "
                                          f"{', '.join(SAMPLERS)} and STEPS a positive integer")
    return name.strip(), int(steps)
