"""The sampling parameters of a request (a JSON body), checked like the CLI before any work.

``parse`` checks what needs no model (types, ranges, the sampler and its options) with the library's own
checks, so the messages are the CLI's; ``for_model`` then checks what needs the listed model's config
(steps <= T, a distilled student's sampler/steps/guidance and guidance levers, class names, how many images
in all) without loading its weights. A ``guide`` is a listed model's name (or ``"none"``); the route looks it up
in the listing and checks that it fits (``card.check_guide``) before queueing. What needs the network or the text
encoder (prompts) is checked by ``Pipeline.plan`` on the worker, with the same messages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from ... import checks
from ...conditioning.spec import ContextSpec
from ...core.samplers import get_sampler
from ...core.schedule import Schedule
from ...errors import UsageError, bad_value
from ...sampling import card
from ...vocab import NO_GUIDE

MAX_IMAGES = 64  # images in one request, all rows together
MAX_ROWS = 8  # context rows (a list of contexts)
MAX_PROMPT = 200  # characters of one context string or prompt
MAX_SETTINGS = 4  # compare: 2..4 settings
DEFAULT_N = 4
KEYS = ("model", "context", "context_to", "mix", "sampler", "steps", "guidance", "guidance_rescale", "eta", "seed", "n",
        "guidance_interval", "guide", "guide_scale", "snap")


@dataclass(frozen=True)
class SampleParams:
    model: str
    context: tuple[str, ...] | None = None  # None: the model's default rows (every class / example captions)
    context_to: str | None = None  # blend the one context towards this one …
    mix: float | None = None  # … at this weight (0 = context, 1 = context_to)
    sampler: str | None = None  # None: the model's recommended settings
    steps: int | None = None
    guidance: float | None = None
    guidance_rescale: float = 0.0
    eta: float | None = None
    seed: int = 0
    n: int = DEFAULT_N
    guidance_interval: tuple[float, float] | None = None  # None: the model card's (0, 1): everywhere
    guide: str | None = None  # a listed model's name, or "none"; None: the model card's guide
    guide_scale: float | None = None  # the guide beside classifier-free guidance, at this scale; None: the card's
    snap: float | None = None  # text: how far prompts move to the nearest training caption (0–1); None: the card's

    def options(self) -> dict[str, Any]:
        """Sampler options (only DDIM takes one here: ``eta``)."""
        return {} if self.eta is None else {"eta": self.eta}

    def metadata(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def parse(raw: Mapping[str, Any], *, allow: tuple[str, ...] = ()) -> SampleParams:
    """``SampleParams`` from a JSON object.

    ``allow`` names extra keys the caller handles itself (compare's ``settings``); any other key is refused."""
    if not isinstance(raw, Mapping):
        raise UsageError(f"the request body is {type(raw).__name__}; expected a JSON object of sampling parameters")
    unknown = [k for k in raw if k not in KEYS and k not in allow]
    if unknown:
        raise UsageError(f"unknown parameter {str(unknown[0])[:40]!r}; known: {', '.join(KEYS + allow)}")
    values = {k: raw[k] for k in KEYS if raw.get(k) is not None}
    if "model" not in values:
        raise bad_value("model", None, "the name of a listed model (GET /api/models)")
    model = values["model"]
    if not isinstance(model, str) or not model.strip() or len(model) > 300:
        raise bad_value("model", model if not isinstance(model, str) else model[:80],
                        "the name of a listed model (GET /api/models)")
    p = SampleParams(model=model)
    if "context" in values:
        p = replace(p, context=_contexts(values["context"]))
    if "context_to" in values:
        if p.context is None or len(p.context) != 1:
            raise bad_value("context_to", _short(values["context_to"]), "a blend target together with exactly one "
                                                                         "context to start from")
        p = replace(p, context_to=_text("context_to", values["context_to"]),
                    mix=checks.finite("mix", values.get("mix", 0.5), low=0, high=1,
                                      allowed="a weight from 0 (the first context) to 1 (the second)"))
    elif "mix" in values:
        raise bad_value("mix", values["mix"], "a weight only together with context_to")
    n = checks.integer("n", values.get("n", DEFAULT_N), low=1, high=MAX_IMAGES,
                       allowed=f"an integer number of images per row in 1..{MAX_IMAGES}")
    p = replace(p, n=n, seed=checks.seed("seed", values.get("seed", 0), n))
    if "steps" in values:
        p = replace(p, steps=checks.integer("steps", values["steps"], low=1,
                                            allowed="a positive integer (at most the model's T)"))
    if "guidance" in values:
        p = replace(p, guidance=checks.guidance(values["guidance"]))
    if "guidance_rescale" in values:
        p = replace(p, guidance_rescale=checks.finite("guidance_rescale", values["guidance_rescale"], low=0, high=1))
    if "sampler" in values:
        p = replace(p, sampler=values["sampler"])
    if "guidance_interval" in values:
        p = replace(p, guidance_interval=checks.guidance_interval(values["guidance_interval"]))
    if "guide" in values:
        p = replace(p, guide=_guide(values["guide"]))
    if "guide_scale" in values:
        p = replace(p, guide_scale=checks.guidance(values["guide_scale"], "guide_scale"))
    if "snap" in values:
        p = replace(p, snap=checks.snap(values["snap"]))
    if "eta" in values:
        eta = checks.finite("eta", values["eta"], low=0, high=1, allowed="a number from 0 (deterministic) to 1")
        # eta = 0 is every other sampler's behaviour too, so a page may send it always; a non-zero eta is DDIM's
        p = replace(p, eta=None if eta == 0 and p.sampler not in (None, "ddim") else eta)
    if p.sampler is not None:
        sampler_options(p.sampler, p)
    return p


def sampler_options(sampler: str, p: SampleParams) -> dict[str, Any]:
    """The options ``sampler`` gets from ``p``, checked by the library (an option it does not take is refused)."""
    get_sampler(sampler, p.options())
    return p.options()


def resolve(p: SampleParams, config: dict[str, Any]) -> tuple[str, int, float]:
    """``(sampler, steps, guidance)`` of a request: the library's ``card.resolve`` (the model card's settings where
    the request gives none)."""
    return card.resolve(config, p.sampler, p.steps, p.guidance)


def levers(p: SampleParams, config: dict[str, Any]) -> tuple[tuple[float, float] | None, Any]:
    """``(guidance interval, guide)`` of a request as the library resolves them (``card.interval``, ``card.guide``):
    the given ones, else the model card's; ``None`` where there is none."""
    return card.interval(config, p.guidance_interval), card.guide(config, p.guide)[0]


def levers_used(p: SampleParams, config: dict[str, Any], used: dict[str, Any] | None) -> dict[str, Any]:
    """What a job's answer and metadata record of the guidance levers its plan used (``SamplePlan.levers``): the
    interval (``[lo, hi]``; ``None``: guided at every step) and the guide by its listed name, or as the model card
    names it (``None``: no guide)."""
    used = used or {}
    guide = used.get("guide")
    if guide is not None:
        guide = p.guide if p.guide not in (None, NO_GUIDE) else card.recommended(config).get("guide")
    return {"guidance_interval": used.get("guidance_interval"), "guide": guide,
            "guide_scale": used.get("guide_scale"), "snap": used.get("snap"), "snapped_to": used.get("snapped_to")}


def for_model(p: SampleParams, config: dict[str, Any], default_rows: int) -> None:
    """What needs the model's config: steps <= T, the resolved sampler's options, a distilled student's limits
    (guidance levers included), class names, image count."""
    sampler, steps, guidance = resolve(p, config)
    sampler_options(sampler, p)
    if steps is not None:
        Schedule.from_dict(config["schedule"]).timesteps(steps)  # 1 <= steps <= T, the library's message
    interval, guide = levers(p, config)
    card.guide_scale(config, p.guide_scale, guide)  # a scale needs a guide
    card.snap(config, p.snap)  # snapping needs a text model that lists its training captions
    card.check_distilled(config.get("distilled"), sampler, steps, guidance, p.guidance_rescale,
                         sampler_options(sampler, p), interval=interval, guide=guide)
    context = config.get("context") or {"kind": "none", "width": 0}
    rows = 1 if p.context_to is not None else len(p.context) if p.context is not None else \
        max(1, min(MAX_ROWS, default_rows))  # the default rows: the first 8 classes or example captions
    if context["kind"] != "text" and p.context is not None:  # prompts need the encoder: checked on the worker
        texts = list(p.context) + ([p.context_to] if p.context_to is not None else [])
        ContextSpec.from_dict(context).parse_many(texts)  # class names and weights, the CLI's messages
    if rows * p.n > MAX_IMAGES:
        raise bad_value("n", p.n, f"at most {MAX_IMAGES // rows} images per row here ({rows} context rows × n "
                                  f"must be at most {MAX_IMAGES} images)")


def settings(raw: Any, T: int | None = None) -> list[tuple[str, int]]:
    """Compare's ``settings``: 2..4 ``SAMPLER:STEPS`` strings (steps <= T when ``T`` is given)."""
    if isinstance(raw, str) or not isinstance(raw, (list, tuple)) or not 2 <= len(raw) <= MAX_SETTINGS:
        raise bad_value("settings", _short(raw), f"a list of 2 to {MAX_SETTINGS} SAMPLER:STEPS strings such as "
                                                 f"['ddpm:500', 'dpmpp_2m:10']")
    parsed = [card.parse_setting(s if isinstance(s, str) else repr(s)[:40]) for s in raw]
    for text, (_, steps) in zip(raw, parsed):
        if T is not None and steps > T:
            raise bad_value("settings", text, f"steps in 1..{T} (this model's T)")
    return parsed


def _guide(value: Any) -> str:
    """A guide's shape: a listed model's name (looked up by the route) or ``"none"``."""
    if not isinstance(value, str) or not value.strip() or len(value) > 300:
        raise bad_value("guide", _short(value), f"the name of a listed ordinary model (GET /api/models) or "
                                                f"{NO_GUIDE!r}; omit it for the model card's")
    return NO_GUIDE if value.strip().lower() == NO_GUIDE else value


def _contexts(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not 1 <= len(items) <= MAX_ROWS:
        raise bad_value("context", _short(value), f"a string or a list of 1 to {MAX_ROWS} strings (class names, "
                                                  f"mixtures like 'hero=1,item=0.6', 'none', or prompts)")
    return tuple(_text("context", c) for c in items)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise bad_value(name, _short(value), "a string")
    if len(value) > MAX_PROMPT:
        raise bad_value(name, value[:40] + "…", f"at most {MAX_PROMPT} characters (this one has {len(value)})")
    return value


def _short(value: Any) -> Any:
    text = repr(value)
    return value if len(text) <= 60 else text[:57] + "…"
