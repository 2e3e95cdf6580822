"""The interop files of a model folder: what other tools read without tinydiffusion.

- ``scheduler_config.json``: a diffusers ``DDPMScheduler`` whose ``alphas_cumprod`` is our ``alpha_bar`` (zero
  terminal SNR as ``rescale_betas_zero_snr``, the prediction type, ``clip_sample`` false);
- ``README.md``: the model card with Hugging Face Hub YAML front matter and the card's recommended settings;
- ``modelspec.*`` metadata (Stability's model-spec keys) in the safetensors header and in the ONNX graph.

Everything here is a pure function of ``config.json``; rewriting a card keeps its own text and replaces only the
front matter and the block between the ``interop`` markers, so it can be run again on the same folder.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from typing import Any

from .. import __version__
from ..core.schedule import Schedule

PREDICTION_TYPES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}  # ours -> diffusers
MODELSPEC_PREDICTION = {"eps": "epsilon", "x0": "sample", "v": "v"}  # ours -> model-spec (as ComfyUI writes it)
BEGIN, END = "<!-- tinydiffusion:interop -->", "<!-- /tinydiffusion:interop -->"
DEFAULT_LICENSE = "other"  # a user's model: its data decide; `export --license` sets it
_FRONT = re.compile(r"\A---\n(.*?)\n---\n?", re.S)


def scheduler_config(config: dict[str, Any]) -> dict[str, Any]:
    """``scheduler_config.json`` for ``diffusers.DDPMScheduler.from_pretrained``: the same ``alpha_bar``.

    The linear schedule and the cosine one with ``s = 0.008`` have diffusers names (diffusers computes them in
    float32, so its ``alphas_cumprod`` equals ours to about 1e-7); another cosine offset is written as its betas.
    ``variance_type`` is our DDPM default (``beta_t``: ``fixed_large``); the grid is ``trailing``, as ours.
    """
    s = config["schedule"]
    out = {"_class_name": "DDPMScheduler", "_diffusers_version": "0.30.0", "num_train_timesteps": s["T"],
           "beta_schedule": "linear", "beta_start": s.get("beta_start", 1e-4), "beta_end": s.get("beta_end", 0.02),
           "trained_betas": None, "variance_type": "fixed_large", "clip_sample": False, "thresholding": False,
           "prediction_type": PREDICTION_TYPES[config.get("prediction", "eps")], "timestep_spacing": "trailing",
           "steps_offset": 0, "rescale_betas_zero_snr": bool(s.get("zero_terminal_snr", False))}
    if s["kind"] == "cosine":
        out["beta_schedule"] = "squaredcos_cap_v2"
        if s.get("s", 0.008) != 0.008:  # diffusers' cosine has the offset fixed: give the betas themselves
            plain = Schedule.from_dict({k: v for k, v in s.items() if k != "zero_terminal_snr"})
            out["trained_betas"] = [float(b) for b in plain.betas]
    return out


def title_of(config: dict[str, Any], fallback: str) -> str:
    return str(config.get("shipped_as") or fallback)


def architecture(config: dict[str, Any]) -> str:
    """The model-spec architecture id: what inference code must know before it can run the weights."""
    m = config["model"]
    return f"tinydiffusion-{m['arch']}-{m['image_size']}-{MODELSPEC_PREDICTION[config.get('prediction', 'eps')]}"


def usage_hint(config: dict[str, Any]) -> str:
    card = config.get("recommended") or {"sampler": "ddpm", "steps": config["schedule"]["T"], "guidance": 1.0}
    only = " (a distilled student: only these settings)" if config.get("distilled") else ""
    interval = card.get("guidance_interval")
    levers = (f" on (t+1)/T in ({interval[0]:g}, {interval[1]:g}]" if interval else "") + \
        (f", autoguidance by {card['guide']}" if card.get("guide") else "") + \
        (f" at {card['guide_scale']:g} beside it" if card.get("guide") and card.get("guide_scale") is not None else "") + \
        (f", prompts snapped {card['snap']:g} toward the nearest training caption" if card.get("snap") else "")
    return f"{card['sampler']}, {card['steps']} steps, guidance {card['guidance']:g}{levers}{only}"


def modelspec(config: dict[str, Any], title: str, license: str | None = None,
              tensor_hash: str | None = None) -> dict[str, str]:
    """Model-spec 1.0 keys (``modelspec.*``, all strings): the MUST keys, then what fits a small image model."""
    m, context = config["model"], config.get("context", {"kind": "none"})
    meta = {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": architecture(config),
            "modelspec.implementation": "tinydiffusion", "modelspec.implementation_version": __version__,
            "modelspec.title": title, "modelspec.description": description(config),
            "modelspec.resolution": f"{m['image_size']}x{m['image_size']}",
            "modelspec.prediction_type": MODELSPEC_PREDICTION[config.get("prediction", "eps")],
            "modelspec.timestep_range": f"0,{config['schedule']['T'] - 1}", "modelspec.usage_hint": usage_hint(config)}
    if context.get("kind") == "class":
        meta["modelspec.trigger_phrase"] = ", ".join(context.get("names", []))
    if license:
        meta["modelspec.license"] = license
    if tensor_hash:
        meta["modelspec.hash_sha256"] = tensor_hash
    return meta


def description(config: dict[str, Any]) -> str:
    m, context = config["model"], config.get("context", {"kind": "none"})
    kind = {"class": f"class-conditional ({', '.join(context.get('names', []))})",
            "text": f"text-conditioned ({context.get('encoder') or 'text'} embeddings, {context.get('width')}-d)",
            "vector": f"conditioned on {context.get('width')}-d vectors", "none": "unconditional"}[context["kind"]]
    student = f", a {config['distilled']['method']}-distilled student" if config.get("distilled") else ""
    return f"A {m['image_size']}x{m['image_size']} {kind} diffusion model{student} made with tinydiffusion."


def safetensors_with_metadata(data: bytes, metadata: dict[str, str]) -> bytes:
    """The safetensors file ``data`` with ``metadata`` in its header (``__metadata__``) and
    ``modelspec.hash_sha256`` set; the tensor bytes are copied unchanged."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    header["__metadata__"] = {**metadata, "modelspec.hash_sha256": "0x" + hashlib.sha256(body).hexdigest()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the header is padded to 8 bytes, as safetensors writes it
    return struct.pack("<Q", len(text)) + text + body


# ---------------------------------------------------------------------- the card
def card(config: dict[str, Any], title: str, body: str = "", license: str | None = None,
         files: tuple[str, ...] = ()) -> str:
    """``README.md``: Hub front matter, the card's own text (``body`` without an old front matter or interop
    block), then the interop block: recommended settings and how to run the folder. ``license`` defaults to the
    old front matter's, else ``other``."""
    old, text = split_front_matter(body)
    text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", "", text, flags=re.S).strip()
    license = license or old.get("license") or DEFAULT_LICENSE
    context = config.get("context", {"kind": "none"})
    size = config["model"]["image_size"]
    tags = ["tinydiffusion", "diffusion", f"{size}x{size}",
            {"class": "class-conditional", "text": "text-conditioned", "vector": "vector-conditioned",
             "none": "unconditional"}[context["kind"]]]
    tags += ["distilled", "few-step"] if config.get("distilled") else []
    tags += ["onnx"] if "model.onnx" in files else []
    front = {"library_name": "tinydiffusion", "license": license, "tags": tags,
             "pipeline_tag": "text-to-image" if context["kind"] == "text" else "unconditional-image-generation"}
    lines = ["---"] + [f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in front.items()] + ["---", ""]
    if not text:
        text = f"# {title}\n\n{description(config)}"
    return "\n".join(lines) + text + "\n\n" + interop_block(config, title, files) + "\n"


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """``(fields, rest)``: the simple ``key: value`` fields of a leading YAML front matter (JSON values, as this
    module writes them, or bare words), and the text after it."""
    match = _FRONT.match(text or "")
    if not match:
        return {}, text or ""
    fields = {}
    for line in match.group(1).splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip() and not key.startswith(" "):
            value = value.strip()
            try:
                fields[key.strip()] = json.loads(value)
            except ValueError:
                fields[key.strip()] = value
    return fields, text[match.end():]


def interop_block(config: dict[str, Any], title: str, files: tuple[str, ...]) -> str:
    context = config.get("context", {"kind": "none"})
    lines = [BEGIN, "## Settings and interop", ""]
    lines.append(f"- Recommended sampling: {usage_hint(config)}.")
    if context["kind"] == "class":
        lines.append(f"- Classes: {', '.join(f'`{n}`' for n in context.get('names', []))} (mixtures such as "
                     f"`{context['names'][0]}=1,{context['names'][-1]}=0.5` work too)." if context.get("names") else
                     "- Classes: none named.")
    elif context["kind"] == "text":
        lines.append(f"- Prompts are embedded with {context.get('encoder')} (the `text` extra), in PyTorch.")
    lines.append(f"- Prediction `{config.get('prediction', 'eps')}`, schedule {json.dumps(config['schedule'])}; "
                 f"`scheduler_config.json` gives diffusers' `DDPMScheduler` the same `alpha_bar`.")
    shipped = config.get("shipped_as") if "model.onnx" not in files else None  # a folder inside the package
    where = shipped or "THIS_FOLDER"
    rows = {"class": context.get("names", []), "text": [str(e[-1]) for e in config.get("examples", [])]}
    example = repr((rows.get(context["kind"]) or [None])[0])  # a class name, a caption, or None
    lines += ["", "```"]
    if "index.html" not in files:  # a site carries no weights: it is the page
        lines += ["# with tinydiffusion installed:", f"tinydiffusion sample {where} --out samples.png",
                  f"python -c \"import tinydiffusion as td; print(td.load('{where}').sample({example}, n=4).shape)\""]
    if "model.onnx" in files:
        lines += ["# model.onnx (onnxruntime, any language): inputs x_t [B,3,H,W] float32, t [B] int64,",
                  "# context [B,D] float32 (all zeros: the null context); output: the prediction named above"]
    if "index.html" in files:
        lines += ["# index.html: serve this folder with any static file server, e.g. python -m http.server"]
    lines += ["```", END]
    return "\n".join(lines)
