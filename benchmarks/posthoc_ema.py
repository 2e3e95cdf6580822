"""Choosing the EMA length after training, measured: one run averaged at several lengths, scored by ``eval`` (a table,
no assertion).

    .venv/bin/python benchmarks/posthoc_ema.py RUN [--sigma-rel 0.02 0.05 0.1 0.2] [--guidance 3]
        [--per-class 200] [--out runs/posthoc_ema]

``RUN`` is a class-model run trained with ``--ema-snapshot-every N`` (``docs/training.md``). Rows: the run's own
export (its fixed ``--ema-decay``) and the run averaged at each relative length ``σ_rel``
(``training/posthoc_ema.py``: reconstructed from the snapshots of its two tracked profiles, exported into
``--out``), every one at the run's card sampler and steps, the given guidance, no autoguidance, from the same
seeds. Writes ``--out/posthoc_ema.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tinydiffusion.quality.evaluate import EvalConfig, evaluate
from tinydiffusion.store.files import write_json, write_text
from tinydiffusion.training.posthoc_ema import export_length


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="a run folder with ema/ snapshots and model/")
    p.add_argument("--sigma-rel", type=float, nargs="+", default=[0.02, 0.05, 0.08, 0.1, 0.15, 0.2])
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--per-class", type=int, default=200)
    p.add_argument("--out", type=Path, default=Path("runs/posthoc_ema"))
    args = p.parse_args()
    decay = json.loads((args.run / "config.json").read_text())["train"]["ema_decay"]
    models = [(f"fixed EMA decay {decay:g} (the run's export)", args.run / "model", None)]
    for s in args.sigma_rel:
        folder, record = export_length(args.run, s, args.out / f"model-ema-{s:g}", overwrite=True)
        models.append((f"post-hoc σ_rel {s:g}", folder, record))
    rows = []
    for label, folder, record in models:
        r = evaluate(EvalConfig(model=str(folder), per_class=args.per_class, guidance=args.guidance, guide="none",
                                out=str(args.out / f"{folder.name}.json")))
        rows.append({"label": label, "sigma_rel": record and record["sigma_rel"],
                     "residual": record and round(record["residual"], 4), "fd_domain": r["fd_domain"],
                     "fd_std": r["fd_domain_bootstrap_std"], "precision": r["precision"], "recall": r["recall"],
                     "accuracy": r["conditional_accuracy"]})
        print(f"{label:<40} FD-domain {r['fd_domain']:.2f} ± {r['fd_domain_bootstrap_std']:.2f}  "
              f"P/R {r['precision']:.2f}/{r['recall']:.2f}  accuracy {r['conditional_accuracy']:.1%}", flush=True)
    write_json(args.out / "posthoc_ema.json", {"run": args.run.name, "guidance": args.guidance,
                                               "per_class": args.per_class, "rows": rows})
    table = ["| EMA | FD-domain | precision / recall | accuracy |", "|---|---:|---:|---:|"]
    table += [f"| {r['label']} | {r['fd_domain']:.2f} ± {r['fd_std']:.2f} | {r['precision']:.2f} / {r['recall']:.2f} "
              f"| {r['accuracy']:.1%} |" for r in rows]
    write_text(args.out / "posthoc_ema.md", "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
