"""``tinydiffusion sample``, ``edit`` (img2img and inpainting) and ``interpolate``: images from a model.

Standard library only at module level (``--help`` must not import torch).
"""

from __future__ import annotations

import argparse

from ..vocab import DETERMINISTIC_SAMPLERS, PRECISIONS, PREDICTIONS, SAMPLERS, SCHEDULES, SPACINGS, VARIANCES
from .types import DEVICE_HELP, SNAP_HELP, finite_float, finite_floats, given, one_of, reports

MODEL_HELP = "a shipped model (sprites, emoji) or an exported model folder"


# ---------------------------------------------------------------------- sample
def add_sample(commands) -> None:
    p = commands.add_parser("sample", help="sample a trained model",
                            description="Sample a model folder. By default one row per class, --n images each.")
    p.add_argument("model", help=f"{MODEL_HELP} (e.g. runs/train/model)")
    p.add_argument("--sampler", choices=SAMPLERS, help=f"{one_of(SAMPLERS)} (default: the model card's "
                                                       "recommendation, e.g. dpmpp_2m for the shipped models)")
    p.add_argument("--steps", type=int, help="network evaluations (default: the model card's with its sampler; "
                                             "else all T for ddpm, 50 for ddim and "
                                             "euler, 20 for dpmpp_2m)")
    p.add_argument("--eta", type=finite_float, help="ddim noise, 0 (deterministic, default) to 1")
    p.add_argument("--variance", choices=VARIANCES, help="ddpm noise level: beta_t (large) or beta~_t")
    p.add_argument("--no-extra-noise", dest="extra_noise", action="store_false", default=None,
                   help="ddpm without the added noise (shows the collapse to the data average)")
    p.add_argument("--spacing", choices=SPACINGS, help="time grid (default trailing)")
    _guidance(p, "1 = none; 2–5 typical; default: the model card's")
    p.add_argument("--guidance-interval", type=finite_floats, metavar="LO,HI",
                   help="guide only where the diffusion time (t+1)/T is in (LO, HI] (1 = the noisiest step), one "
                        "network evaluation per step outside it; e.g. 0.1,0.75; 0,1 = everywhere (default: the "
                        "model card's, else everywhere)")
    p.add_argument("--guide", metavar="MODEL",
                   help="autoguidance: guide with this weaker model (the same recipe trained shorter, a smaller "
                        "preset; same data, size and schedule) instead of the unconditional branch; --guidance is "
                        "then its scale; 'none' turns a model card's guide off (default: the card's, else none)")
    p.add_argument("--guide-scale", type=finite_float, metavar="W",
                   help="with --guide: the guide stands beside the unconditional branch instead, autoguidance at W "
                        "under classifier-free guidance at --guidance (four evaluations per step, two of them the "
                        "guide's; default: the card's, else none)")
    p.add_argument("--snap", type=finite_float, metavar="S", help=SNAP_HELP)
    p.add_argument("--clip-x0", action="store_true", default=None, help="clip each predicted x0 to [-1, 1]")
    p.add_argument("--prediction", choices=PREDICTIONS,
                   help="refuse the model unless it was trained for this target")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help="refuse the model unless it was trained with this schedule")
    p.add_argument("--context", dest="contexts", action="append",
                   help="class name or mixture ('hero', 'hero=1,item=0.6', 'monster+spell', 'none'); "
                        "repeat for more rows (default: every class)")
    p.add_argument("--prompt", dest="contexts", action="append",
                   help="a text prompt for a text-conditioned model (same as --context); repeat for more rows")
    p.add_argument("--prompt-to", help="interpolate from the one --prompt to this prompt, at the --mix weights")
    p.add_argument("--mix", type=finite_floats, help="comma-separated weights for --prompt-to, e.g. 0,0.25,0.5,0.75,1")
    p.add_argument("--context-file", help="an .npy of context vectors [K, D] for a vector-conditioned model")
    p.add_argument("--n", type=int, help="images per row (default 8)")
    p.add_argument("--seed", type=int, help="seed of the first column (default 0)")
    p.add_argument("--out", help="a .png grid (default samples.png), an .npz of raw images, or a folder")
    p.add_argument("--gif", help="also write the denoising animation to this .gif")
    p.add_argument("--backend", help="the network on torch, onnx (onnxruntime: faster on a CPU; the onnx extra) or "
                                     "auto (default: onnx for a folder holding model.onnx)")
    _run(p)
    p.set_defaults(handler=_sample)


def _sample(args) -> int:
    from ..sampling.generate import SampleConfig, sample_to_files
    from .export import backend_pipeline

    values = _tuples(given(args, SampleConfig), "contexts", "mix")
    config = SampleConfig(**values)
    result = sample_to_files(config, None if args.backend is None else backend_pipeline(config, args.backend))
    if not reports():
        return 0
    per_image = result.seconds / result.count
    used = result.settings
    carded = [k for k in ("sampler", "guidance") if k not in values]
    if carded:
        steps = "" if used["steps"] is None else f", {used['steps']} steps"
        other = "a distilled student: it samples only in the settings it was distilled for" if result.distilled else \
            "the textbook DDPM over all steps: --sampler ddpm --guidance 1"
        print(f"the model card's recommendation for {' and '.join(carded)}: {used['sampler']}{steps}, guidance "
              f"{used['guidance']:g} ({other})")
    levers = [text + (" (the model card's)" if key not in values else "") for key, text in _levers(used).items()]
    if result.note or levers:
        print("; ".join(([result.note] if result.note else []) + levers))
    guide = f" ({used['nfe_guide']} of them the guide's)" if used.get("nfe_guide") else ""
    print(f"{result.count} images with {used['sampler']}, {result.nfe} network evaluations each{guide}: "
          f"{result.seconds:.2f} s wall time ({per_image * 1000:.1f} ms per image)")
    _wrote(result.paths)
    return 0


# ---------------------------------------------------------------------- edit
def add_edit(commands) -> None:
    p = commands.add_parser("edit", help="edit an image: re-dress it with another context (img2img), or "
                                         "regenerate a masked part (inpainting)",
                            description="Noise --image to the step --strength names and denoise it with --context "
                                        "(SDEdit), or with --mask regenerate the black part and keep the white part "
                                        "exactly (RePaint). The image is centre-cropped and resized to the model's "
                                        "size as training data is. A grid shows the input, the mask and the outputs "
                                        "side by side, one row per context.")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--image", required=True, help="the PNG or JPEG to edit")
    p.add_argument("--mask", help="inpainting: a PNG or JPEG of any size, white = keep, black = generate "
                                  "(resized with nearest-neighbour)")
    p.add_argument("--context", dest="contexts", action="append",
                   help="target class, mixture or prompt; repeat for more rows (default: every class)")
    p.add_argument("--prompt", dest="contexts", action="append", help="same as --context, for text models")
    p.add_argument("--strength", type=finite_float,
                   help="in (0, 1]: the share of the sampler's steps run again from the noised input; 1 ignores "
                        "the input (default 0.6; with --mask 1)")
    p.add_argument("--sampler", choices=SAMPLERS, help="default: the model card's (e.g. dpmpp_2m); inpainting "
                                                       "takes ddpm (default) or ddim")
    p.add_argument("--steps", type=int, help="steps of the whole grid, of which --strength runs the tail (default: "
                                             "the model card's; inpainting 50 with ddpm, 20 with ddim)")
    p.add_argument("--eta", type=finite_float, help="ddim noise, 0 (default) to 1")
    p.add_argument("--variance", choices=VARIANCES, help="ddpm noise level, inpainting over ddpm too (default large)")
    p.add_argument("--spacing", choices=SPACINGS, help="time grid (default trailing)")
    _guidance(p, "1 = none; default: the model card's")
    p.add_argument("--resample", type=int, help="inpainting: RePaint's resampling r, each jump back repeated r-1 "
                                                "times (default 1: none; 5-10 harmonise better, at more cost)")
    p.add_argument("--jump-length", type=int, help="inpainting: RePaint's jump length j in steps (default 10)")
    p.add_argument("--n", type=int, help="outputs per row, seeds --seed … (default 4)")
    p.add_argument("--seed", type=int, help="seed of the first column (default 0)")
    p.add_argument("--out", help="a .png grid (default edit.png), an .npz (images = the outputs; inputs, mask, "
                                 "contexts, labels, metadata) or a folder")
    p.add_argument("--gif", help="also write the denoising animation to this .gif")
    _run(p)
    p.set_defaults(handler=_edit)


def _edit(args) -> int:
    from ..sampling.editing import EditConfig, edit_to_files

    r = edit_to_files(EditConfig(**_tuples(given(args, EditConfig), "contexts")))
    s = r.settings
    what = (f"inpainted (RePaint, {s['steps']} {s['sampler']} steps, resample {s['resample']}, jump length "
            f"{s['jump_length']})" if "resample" in s else f"edited with {s['sampler']} at strength "
                                                           f"{s['strength']:g} of {s['steps']} steps")
    print(f"{r.count} images {what}, guidance {s['guidance']:g}: {s['nfe']} network evaluations each, "
          f"{r.seconds:.2f} s")
    _wrote(r.paths)
    return 0


# ---------------------------------------------------------------------- interpolate
def add_interpolate(commands) -> None:
    p = commands.add_parser("interpolate", help="morph between two seeds (and two contexts) with a deterministic "
                                                "sampler",
                            description="Spherically interpolate the starting noise of --seed-a and --seed-b over "
                                        "--frames frames (and the context from --context to --context-to); the first "
                                        "and last frames are the two seeds' samples.")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--seed-a", type=int, help="the first frame's seed (default 0)")
    p.add_argument("--seed-b", type=int, help="the last frame's seed (default 1)")
    p.add_argument("--frames", type=int, help="frames, both ends included (default 9)")
    p.add_argument("--context", "--prompt", dest="context", help="class, mixture or prompt (default: unconditional)")
    p.add_argument("--context-to", "--prompt-to", dest="context_to", help="move the context to this one as well")
    p.add_argument("--sampler", choices=DETERMINISTIC_SAMPLERS, help="deterministic sampler (default: the "
                                                                     "model card's)")
    p.add_argument("--steps", type=int, help="steps (default: the model card's)")
    p.add_argument("--spacing", choices=SPACINGS, help="time grid (default trailing)")
    _guidance(p, "1 = none; default: the model card's")
    p.add_argument("--out", help="a .png strip (default interpolate.png), an .npz or a folder")
    p.add_argument("--gif", help="also write the frames as an animation to this .gif")
    _run(p)
    p.set_defaults(handler=_interpolate)


def _interpolate(args) -> int:
    from ..sampling.editing import InterpolateConfig, interpolate_to_files

    r = interpolate_to_files(InterpolateConfig(**given(args, InterpolateConfig)))
    s = r.settings
    print(f"{r.count} frames with {s['sampler']}, {s['nfe']} network evaluations each, guidance {s['guidance']:g}: "
          f"{r.seconds:.2f} s")
    _wrote(r.paths)
    return 0


def _levers(used: dict) -> dict:
    """What the guidance levers used read as, by setting."""
    interval, guide, scale = used.get("guidance_interval"), used.get("guide"), used.get("guide_scale")
    beside = f" at {scale:g}, beside classifier-free guidance" if scale is not None else ""
    snapped = ", ".join(f"{caption!r}" for caption in dict.fromkeys(used.get("snapped_to") or []) if caption)
    return {**({"guidance_interval": f"guided only where (t+1)/T is in ({interval[0]:g}, {interval[1]:g}]"}
               if interval else {}), **({"guide": f"autoguidance by {guide}{beside}"} if guide else {}),
            **({"snap": f"prompts snapped {used['snap']:g} of the way to the nearest training caption ({snapped})"}
               if used.get("snap") and snapped else {})}


# ---------------------------------------------------------------------- shared
def _guidance(p: argparse.ArgumentParser, scale: str) -> None:
    p.add_argument("--guidance", type=finite_float, help=f"classifier-free guidance scale ({scale})")
    p.add_argument("--guidance-rescale", type=finite_float, help="guidance rescale phi in [0, 1] (default 0)")


def _run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, help="images per forward pass (default 64)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--precision", choices=PRECISIONS, help="bf16 autocasts the network (default fp32)")


def _tuples(values: dict, *keys: str) -> dict:
    """The repeated options (lists from argparse) as the tuples the frozen configs hold."""
    return {k: tuple(v) if k in keys else v for k, v in values.items()}


def _wrote(paths) -> None:
    for path in paths:
        print(f"  wrote {path}")
