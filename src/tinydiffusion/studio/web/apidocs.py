"""``/docs``: the OpenAPI description as one HTML page (no CDN, no script, its style in ``static/apidocs.css``:
the same-origin CSP allows no inline style), so it works offline; and what the routes add to that description
(their JSON bodies and examples)."""

from __future__ import annotations

import html
import json
from typing import Any

PARAM_DOCS = {"model": "a listed model name", "context": "CLI syntax: hero, hero=1,item=0.6, none, or a prompt; "
              "repeat for more rows", "context_to": "blend the context towards this one", "mix": "blend weight 0..1",
              "sampler": "ddpm, ddim, dpmpp_2m, euler or consistency (a distilled student: only its own)",
              "steps": "1..T (a distilled student: its step counts)",
              "guidance": "finite, >= 0 (a distilled student: only the scale folded into it)",
              "guidance_rescale": "0..1", "eta": "0..1, ddim only", "seed": "int >= 0", "n": "images per row, 1..64",
              "guidance_interval": "[lo, hi], 0 <= lo <= hi <= 1: guided only where (t+1)/T is in (lo, hi]; "
                                   "[0, 1] everywhere; omitted: the model card's",
              "guide": "autoguidance: a listed ordinary model of the same size and context, or 'none'; omitted: the "
                       "model card's (with a guide, guidance is autoguidance's scale)",
              "guide_scale": "finite, >= 0, with a guide: autoguidance at this scale beside classifier-free guidance "
                             "at guidance (4 evaluations per step); omitted: the model card's",
              "snap": "0..1, text models that list their training captions: each prompt moves this far toward the "
                      "nearest one (1: that caption); omitted: the model card's, else 0"}
EDIT_DOCS = {"image": "PNG/JPEG data URL (at most 2 MB), centre-cropped to the model's size",
             "mask": "optional PNG/JPEG data URL: white = keep, black = generate (inpainting, RePaint over DDPM)",
             "strength": "(0, 1]; default 0.6 (img2img) or 1 (inpainting)", "n": "images per row, 1..16"}
EXAMPLE = {"model": "sprites", "context": ["hero", "hero=1,item=0.6"], "sampler": "dpmpp_2m", "steps": 10,
           "guidance": 3, "seed": 0, "n": 4}


def page(spec: dict[str, Any]) -> str:
    """Every operation of ``spec`` (method, path, summary, description, parameters, request body)."""
    info = spec.get("info", {})
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(info.get('title', 'API'))}"
             f"</title><link rel='stylesheet' href='/static/apidocs.css'><link rel='icon' href='data:,'></head><body>",
             f"<h1>{_e(info.get('title', 'API'))} <span class='muted'>{_e(info.get('version', ''))}</span></h1>",
             f"<p>{_e(info.get('description', ''))}</p>",
             "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>. Errors are JSON "
             "<code>{\"error\": \"…\"}</code> with status 403 (a foreign Host or Origin, a missing token), 404, "
             "408, 415 (a body that is not <code>application/json</code>), 422, 429 (with <code>Retry-After</code>), "
             "503 or 500. Every request with a body is a <code>POST</code> with <code>Content-Type: "
             "application/json</code>; see docs/studio_api.md.</p>"]
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            parts.append(_operation(path, method, op))
    parts.append("</body></html>")
    return "\n".join(parts)


def body_docs(example: dict, edit: bool = False) -> dict:
    """A route's ``openapi_extra``: its JSON body's keys (the edit's too when ``edit``) and an example."""
    docs = {**PARAM_DOCS, **(EDIT_DOCS if edit else {})}
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "properties": {k: {"description": v} for k, v in docs.items()}},
        "example": example}}}}


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    out = [f"<div class='op'><p><span class='m {_e(method)}'>{_e(method.upper())}</span><code>{_e(path)}</code> "
           f"— {_e(op.get('summary', ''))}</p>"]
    if op.get("description"):
        out.append(f"<p>{_e(op['description'])}</p>")
    params = op.get("parameters") or []
    if params:
        out.append("<table><tr><th>parameter</th><th>in</th><th>meaning</th></tr>")
        for p in params:
            out.append(f"<tr><td><code>{_e(p.get('name'))}</code></td><td>{_e(p.get('in'))}</td>"
                       f"<td>{_e(p.get('description', ''))}</td></tr>")
        out.append("</table>")
    body = (op.get("requestBody") or {}).get("content", {}).get("application/json")
    if body:
        example = body.get("example") or body.get("schema", {}).get("example")
        out.append("<p>JSON body" + (":</p><pre>" + _e(json.dumps(example, indent=2)) + "</pre>" if example else "</p>"))
    return "".join(out) + "</div>"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))
