"""``tinydiffusion export``: a model as an ONNX folder or a static web page (standard library only at module level:
``--help`` must not import torch). The formats and every check are the library's (``export/``)."""

from __future__ import annotations


def add_export(commands) -> None:
    p = commands.add_parser("export", help="run a model anywhere: an ONNX folder (onnxruntime) or a static web page "
                                           "that generates in the browser",
                            description="Write MODEL as --format onnx (model.onnx beside config.json, the weights and "
                                        "the interop files: `sample DIR` and td.load(DIR) then run it with "
                                        "onnxruntime) or --format web (a static site: index.html, the ONNX model and "
                                        "onnxruntime-web, served by any static file server). Both check the graph "
                                        "against PyTorch first and need the 'onnx' extra; web fetches "
                                        "onnxruntime-web once with npm.")
    p.add_argument("model", help="a shipped model (sprites, emoji, sprites-fast, sprites-instant, emoji-fast) or a model folder")
    p.add_argument("--format", default="onnx", help="onnx (default) or web")
    p.add_argument("--out", required=True, help="the folder to write (new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if a previous export is there")
    p.add_argument("--prompt", dest="prompts", action="append", default=[],
                   help="web, text models: a prompt the page offers (repeat; default: the card's example captions), "
                        "embedded now by the text encoder")
    p.add_argument("--license", help="the licence id for the card's front matter (default: the model's card's, "
                                     "else other)")
    p.add_argument("--ort-web", help="web: the tarball of `npm pack onnxruntime-web@1.30.0` (for a machine without "
                                     "npm; default: the cache, else npm)")
    p.set_defaults(handler=_export)


def _export(args) -> int:
    from ..export import export

    r = export(args.model, args.out, args.format, overwrite=args.overwrite, prompts=tuple(args.prompts),
               license=args.license, ort_web=args.ort_web)
    for note in r.notes:
        print(f"note: {note}")
    print(f"exported {args.model} as {args.format} to {r.out} in {r.seconds:.1f} s: {', '.join(r.files)}")
    print(f"  parity: the ONNX network's outputs are within {r.max_difference:.2g} of PyTorch's (max abs difference)")
    if args.format == "web":
        print(f"  serve it with any static file server, e.g. python -m http.server -d {r.out} 8000, "
              f"then open http://127.0.0.1:8000/")
    else:
        print(f"  sample it through onnxruntime: tinydiffusion sample {r.out}")
    return 0


def backend_pipeline(config, backend: str):
    """``sample --backend``: the pipeline ``sample_to_files`` would load, with the network on ``backend``."""
    from ..runtime.dist import resolve_device
    from ..sampling.pipeline import load

    device = "cpu" if backend == "onnx" and config.device == "auto" else resolve_device(config.device)
    return load(config.model, device=device, prediction=config.prediction, backend=backend,
                schedule={"kind": config.schedule} if config.schedule else None)
