#!/usr/bin/env bash
# The CPU recipe study: our default `train` settings against the course's network and hyper-parameters,
# for the same wall-clock budget on the embedded sprites, then both scored by `tinydiffusion eval`.
#
#   bash benchmarks/recipe_study.sh MINUTES [OUT]      # e.g. 30 → runs/study-30/{ours,course}
#   SCORE_ONLY=1 bash benchmarks/recipe_study.sh 30    # score the trained models again (a new evaluator)
#
# The two runs train side by side, one core each (OMP_NUM_THREADS=1), so they get equal compute and
# finish together; on a 2-core machine that is half of what one run alone would get, so the budget is
# a conservative one for both. Each model is then sampled with at most 20 network evaluations per
# image: DPM-Solver++(2M) 10 steps with guidance 3 (conditional and unconditional halves: 2×10) and
# DDIM 20 steps without guidance, 200 images per class, seed 1000.
set -euo pipefail
minutes=${1:?usage: recipe_study.sh MINUTES [OUT]}
out=${2:-runs/study-$minutes}
mkdir -p "$out"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

if [[ "${SCORE_ONLY:-0}" != 1 ]]; then
# Ours: every default (small UNet, 16 px, v prediction, zero terminal SNR, EMA, class balance).
tinydiffusion train --out "$out/ours" --minutes "$minutes" --no-progress > "$out/ours.log" 2>&1 &
# The course: its ContextUnet (fixed), eps prediction, Adam lr 1e-3, batch 100, no EMA, no
# class balancing, no flips, no warm-up, no gradient clipping, context dropped 10 % of the time.
tinydiffusion train --out "$out/course" --minutes "$minutes" --no-progress --model course --prediction eps \
  --no-zero-terminal-snr --lr 1e-3 --batch-size 100 --ema-decay 0 --warmup 0 --grad-clip 1e9 \
  --no-balance --no-flip > "$out/course.log" 2>&1 &
wait
fi

for run in ours course; do
  tinydiffusion eval "$out/$run/model" --sampler dpmpp_2m --steps 10 --guidance 3 --out "$out/$run/eval_dpmpp10_g3.json" &
  tinydiffusion eval "$out/$run/model" --sampler ddim --steps 20 --out "$out/$run/eval_ddim20.json" &
  wait
done

python - "$out" "$minutes" <<'EOF'
import json, sys
from pathlib import Path
out, minutes = Path(sys.argv[1]), sys.argv[2]
rows = []
for run in ("ours", "course"):
    trained = (out / f"{run}.log").read_text().split("trained ")[1].split(" steps")[0]
    for name in ("dpmpp10_g3", "ddim20"):
        r = json.loads((out / run / f"eval_{name}.json").read_text())
        rows.append({"run": run, "minutes": float(minutes), "sampling": name, "fd_domain": r["fd_domain"],
                     "fd_std": r["fd_domain_bootstrap_std"], "kid": r["kid"],
                     "conditional_accuracy": r["conditional_accuracy"], "precision": r["precision"],
                     "recall": r["recall"], "train_steps": int(trained)})
(out / "study.json").write_text(json.dumps(rows, indent=2) + "\n")
print(f"{'run':<8}{'min':>5}{'steps':>7} {'sampling':<12}{'FD-domain':>14}{'cond. acc':>11}{'precision':>11}{'recall':>8}")
for r in rows:
    print(f"{r['run']:<8}{r['minutes']:>5.0f}{r['train_steps']:>7} {r['sampling']:<12}{r['fd_domain']:>8.2f}±{r['fd_std']:<5.2f}"
          f"{r['conditional_accuracy']:>10.1%}{r['precision']:>11.2f}{r['recall']:>8.2f}")
for name in ("dpmpp10_g3", "ddim20"):
    ours, course = (next(r for r in rows if r["run"] == run and r["sampling"] == name) for run in ("ours", "course"))
    print(f"{name}: FD-domain ours/course = {ours['fd_domain'] / course['fd_domain']:.2f}")
EOF
