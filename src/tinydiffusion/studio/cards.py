"""A listed model's card: what it conditions on, its size, its recommended settings, how it was trained.

Paths in a model's ``config.json`` (its training data and run folder, a student's teacher) are shown as the
listing names them (``Catalog.shown``: ``runs/study``, ``sprites``, or a file's last part), never as absolute
server paths."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError
from ..models import ModelConfig, build_model, count_parameters
from ..sampling.card import CARD_LEVERS, recommended, resolve
from .runfiles import read_metrics, readme

log = logging.getLogger("tinydiffusion.studio")


def card(entry, shown: Callable[[Any], Any] = lambda p: p, redact: Callable[[str], str] = str) -> dict[str, Any]:
    """The ``GET /api/models`` entry of a ``catalog.ModelEntry`` (docs/studio_api.md); ``shown`` names a path
    from the config, ``redact`` rewrites the paths in a message."""
    c = entry.config
    reason = redact(entry.reason) if entry.reason else entry.reason
    out = {"name": entry.name, "source": entry.source, "available": entry.available, "reason": reason}
    if not c:
        return out
    context = c.get("context") or {"kind": "none"}
    sampler, steps, guidance = resolve(c)  # the model card's settings, as a request that names none gets them
    levers = {k: shown(v) for k, v in recommended(c).items() if k in CARD_LEVERS}
    training = {k: shown(v) for k, v in ((c.get("training") or {}).get("config") or {}).items()} or None
    out.update({"kind": context["kind"], "classes": list(context.get("names") or []),
                "examples": entry.default_rows if context["kind"] == "text" else [],
                "captions": len(c.get("captions") or []),  # training captions a prompt can snap to
                "image_size": c["model"]["image_size"], "parameters": parameters(c),
                "prediction": c.get("prediction", "eps"), "T": c["schedule"]["T"], "schedule": c["schedule"].get("kind"),
                "defaults": {"sampler": sampler, "steps": steps, "guidance": guidance, **levers},
                "distilled": distilled(c, shown),
                "card": {"trained": trained({"training": {"config": training}}, entry.run),
                         "readme": _redacted(readme(entry.path), redact), "training": training}})
    return out


def _redacted(text: str | None, redact: Callable[[str], str]) -> str | None:
    return None if text is None else redact(text)


def distilled(config: dict[str, Any], shown: Callable[[Any], Any] = lambda p: p) -> dict[str, Any] | None:
    """A few-step student's limits (``config.json`` ``distilled``): the one sampler, the step counts and the
    guidance scale folded into its network; ``None`` for an ordinary model."""
    d = config.get("distilled")
    if not d:
        return None
    return {"method": d["method"], "sampler": d["sampler"], "steps": list(d["steps"]), "guidance": float(d["guidance"]),
            "teacher": shown(d.get("teacher")), "teacher_sampler": d.get("teacher_sampler"),
            "teacher_steps": d.get("teacher_steps")}


def parameters(config: dict[str, Any]) -> int | None:
    """The network's parameter count, from its config (the network is built, no weights read)."""
    try:
        return count_parameters(build_model(ModelConfig.from_dict(config["model"])))
    except (UsageError, KeyError, TypeError, ValueError) as e:
        log.warning("could not count the parameters of a model: %s", e)
        return None


def trained(config: dict[str, Any], run: Path | None) -> str:
    """One line: data, preset, size, batch, learning rate, budget, device, seed (and the steps a run logged)."""
    t = (config.get("training") or {}).get("config") or {}
    if not t:
        return "not recorded"
    budget = (f"{t['steps']} steps" if t.get("steps") else f"{t['epochs']:g} epochs" if t.get("epochs")
              else f"{t['minutes']:g} minutes" if t.get("minutes") else "default budget")
    parts = [f"{t.get('data', '?')} data", f"{t.get('model', '?')} preset", f"{t.get('image_size', '?')} px",
             f"batch {t.get('batch_size', '?')}", f"lr {t.get('lr', '?')}", budget,
             f"{t.get('device', '?')} {t.get('precision', '')}".strip(), f"seed {t.get('seed', '?')}"]
    if run is not None:
        metrics = read_metrics(run / "metrics.csv", 2, limit=8192)
        if metrics["step"]:
            parts.append(f"{int(metrics['step'][-1])} steps done in {metrics['elapsed_s'][-1] or 0:.0f} s")
    return ", ".join(parts)
