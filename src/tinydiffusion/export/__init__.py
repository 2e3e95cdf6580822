"""Run a model anywhere: ``export(model, out, format="onnx" | "web")``.

    onnx.py    the network as model.onnx beside the model's files; the parity check against PyTorch
    web.py     a static site that generates in the browser (onnxruntime-web, WebAssembly)
    vendor.py  onnxruntime-web's files, pinned and checksummed, from its npm package
    hub.py     interop files: diffusers scheduler_config.json, the Hub card's front matter, model-spec metadata
    site/      the page's own files (index.html, app.js, td.js: the samplers ported, style.css)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from .. import checks
from ..errors import bad_value
from ..vocab import EXPORT_FORMATS as FORMATS
from .onnx import ExportResult, export_onnx
from .web import export_web


def export(model: str | Path, out: str | Path, format: str = "onnx", *, overwrite: bool = False,
           prompts: Sequence[str] = (), license: str | None = None, ort_web: str | Path | None = None) -> ExportResult:
    """Write ``model`` (a shipped name or a model folder) to ``out`` as an ONNX folder or a static web site."""
    checks.choice("format", format, FORMATS)
    if license is not None and not (isinstance(license, str) and re.fullmatch(r"[a-z0-9][a-z0-9.+-]{0,63}", license)):
        raise bad_value("license", license, "a Hub licence id such as mit, apache-2.0, cc-by-4.0 or other")
    if format == "onnx":
        for name, value in (("prompts", list(prompts)), ("ort_web", ort_web)):
            if value:
                raise bad_value(name, value, "nothing with format onnx (it is a setting of format web)")
        return export_onnx(model, out, overwrite=overwrite, license=license)
    return export_web(model, out, overwrite=overwrite, prompts=prompts, license=license, ort_web=ort_web)


__all__ = ["FORMATS", "ExportResult", "export", "export_onnx", "export_web"]
