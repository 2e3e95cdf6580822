"""Command-line parts for editing: ``edit`` (img2img and inpainting) and ``interpolate``.

Standard library only at module level (``--help`` must not import torch).
"""

from __future__ import annotations

import argparse

from ..vocab import DETERMINISTIC_SAMPLERS, PRECISIONS, SAMPLERS, SPACINGS, VARIANCES
from .types import finite_float


def add_commands(commands, given) -> None:
    """Register the subcommands; ``given(args, ConfigType)`` picks the options the user set."""
    p = commands.add_parser("edit", help="edit an image: re-dress it with another context (img2img), or "
                                         "regenerate a masked part (inpainting)",
                            description="Noise --image to the step --strength names and denoise it with --context "
                                        "(SDEdit), or with --mask regenerate the black part and keep the white part "
                                        "exactly (RePaint). The image is centre-cropped and resized to the model's "
                                        "size as training data is. A grid shows the input, the mask and the outputs "
                                        "side by side, one row per context.")
    p.add_argument("model", help="a shipped model (sprites, emoji) or an exported model folder")
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
                                                            "takes ddpm only")
    p.add_argument("--steps", type=int, help="steps of the whole grid, of which --strength runs the tail (default: "
                                             "the model card's; inpainting 50)")
    p.add_argument("--eta", type=finite_float, help="ddim noise, 0 (default) to 1")
    p.add_argument("--variance", choices=VARIANCES, help="ddpm/inpainting noise level (default large)")
    p.add_argument("--spacing", choices=SPACINGS, help="time grid (default trailing)")
    _guidance(p)
    p.add_argument("--resample", type=int, help="inpainting: RePaint's resampling r, each jump back repeated r-1 "
                                                "times (default 1: none; 5-10 harmonise better, at more cost)")
    p.add_argument("--jump-length", type=int, help="inpainting: RePaint's jump length j in steps (default 10)")
    p.add_argument("--n", type=int, help="outputs per row, seeds --seed … (default 4)")
    p.add_argument("--seed", type=int, help="seed of the first column (default 0)")
    p.add_argument("--out", help="a .png grid (default edit.png), an .npz (images = the outputs; inputs, mask, "
                                 "contexts, labels, metadata) or a folder")
    p.add_argument("--gif", help="also write the denoising animation to this .gif")
    _run(p)
    p.set_defaults(handler=lambda args: _edit(args, given))

    p = commands.add_parser("interpolate", help="morph between two seeds (and two contexts) with a deterministic "
                                                "sampler",
                            description="Spherically interpolate the starting noise of --seed-a and --seed-b over "
                                        "--frames frames (and the context from --context to --context-to); the first "
                                        "and last frames are the two seeds' samples.")
    p.add_argument("model", help="a shipped model (sprites, emoji) or an exported model folder")
    p.add_argument("--seed-a", type=int, help="the first frame's seed (default 0)")
    p.add_argument("--seed-b", type=int, help="the last frame's seed (default 1)")
    p.add_argument("--frames", type=int, help="frames, both ends included (default 9)")
    p.add_argument("--context", "--prompt", dest="context", help="class, mixture or prompt (default: unconditional)")
    p.add_argument("--context-to", "--prompt-to", dest="context_to", help="move the context to this one as well")
    p.add_argument("--sampler", choices=DETERMINISTIC_SAMPLERS, help="deterministic sampler (default: the "
                                                                          "model card's)")
    p.add_argument("--steps", type=int, help="steps (default: the model card's)")
    p.add_argument("--spacing", choices=SPACINGS, help="time grid (default trailing)")
    _guidance(p)
    p.add_argument("--out", help="a .png strip (default interpolate.png), an .npz or a folder")
    p.add_argument("--gif", help="also write the frames as an animation to this .gif")
    _run(p)
    p.set_defaults(handler=lambda args: _interpolate(args, given))


def _guidance(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guidance", type=finite_float, help="classifier-free guidance scale (1 = none; default: the "
                                                         "model card's)")
    p.add_argument("--guidance-rescale", type=finite_float, help="guidance rescale phi in [0, 1] (default 0)")


def _run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, help="images per forward pass (default 64)")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, help="bf16 autocasts the network (default fp32)")


def _edit(args, given) -> int:
    from ..sampling.editing import EditConfig, edit_to_files

    values = given(args, EditConfig)
    if "contexts" in values:
        values["contexts"] = tuple(values["contexts"])
    r = edit_to_files(EditConfig(**values))
    s = r.settings
    what = (f"inpainted (RePaint, {s['steps']} ddpm steps, resample {s['resample']}, jump length "
            f"{s['jump_length']})" if "resample" in s else f"edited with {s['sampler']} at strength "
                                                           f"{s['strength']:g} of {s['steps']} steps")
    print(f"{r.count} images {what}, guidance {s['guidance']:g}: {s['nfe']} network evaluations each, "
          f"{r.seconds:.2f} s")
    for path in r.paths:
        print(f"  wrote {path}")
    return 0


def _interpolate(args, given) -> int:
    from ..sampling.interpolate import InterpolateConfig, interpolate_to_files

    r = interpolate_to_files(InterpolateConfig(**given(args, InterpolateConfig)))
    s = r.settings
    print(f"{r.count} frames with {s['sampler']}, {s['nfe']} network evaluations each, guidance {s['guidance']:g}: "
          f"{r.seconds:.2f} s")
    for path in r.paths:
        print(f"  wrote {path}")
    return 0
