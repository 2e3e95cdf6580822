"""``/docs``: the OpenAPI description as one self-contained HTML page (no CDN, no script), so it works offline."""

from __future__ import annotations

import html
import json
from typing import Any

_STYLE = """body{font:15px/1.5 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#1d2330}
h1{margin-bottom:.2em}code,pre{font:13px ui-monospace,monospace;background:#f2f4f8;border-radius:4px}
pre{padding:.6em;overflow:auto}.op{border:1px solid #d8dce6;border-radius:8px;margin:1em 0;padding:.6em 1em}
.m{display:inline-block;min-width:4.5em;font-weight:700;color:#fff;border-radius:4px;text-align:center;margin-right:.6em}
.get{background:#2f7d4f}.post{background:#2f5fa8}table{border-collapse:collapse}td,th{padding:.2em .8em .2em 0;
text-align:left;vertical-align:top}.muted{color:#667}"""


def page(spec: dict[str, Any]) -> str:
    """Every operation of ``spec`` (method, path, summary, description, parameters, request body)."""
    info = spec.get("info", {})
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(info.get('title', 'API'))}"
             f"</title><style>{_STYLE}</style></head><body>",
             f"<h1>{_e(info.get('title', 'API'))} <span class='muted'>{_e(info.get('version', ''))}</span></h1>",
             f"<p>{_e(info.get('description', ''))}</p>",
             "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>. Errors are JSON "
             "<code>{\"error\": \"…\"}</code> with status 404, 422, 429 (with <code>Retry-After</code>) or 500.</p>"]
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            parts.append(_operation(path, method, op))
    parts.append("</body></html>")
    return "\n".join(parts)


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
