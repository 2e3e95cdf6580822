#!/usr/bin/env bash
# One prepared GPU session (under 8 minutes): speed on the GPU, then the shipped models and evaluator.
#
#   bash benchmarks/gpu.sh OUT_DIR [TRAIN_MINUTES]
#
# Runs from the repository root with the machine's own python3 (torch with CUDA) and the package
# from src/ (no install). The emoji model needs the caption-embedding cache: XDG_CACHE_HOME must
# hold tinydiffusion/captions-all-MiniLM-L6-v2-*.npy (made on any machine with the 'text' extra by
# training once, or by tinydiffusion.conditioning.text.embed_captions), so the GPU never loads the text encoder.
# Rehearse on a CPU with tiny settings:
#   DEVICE=cpu PYTHON=.venv/bin/python PRESETS=tiny BATCH=8 SECONDS_EACH=0.1 EVAL_EPOCHS=1 N=4 \
#     bash benchmarks/gpu.sh /tmp/rehearsal 0.02
set -uo pipefail
out=${1:?usage: gpu.sh OUT_DIR [TRAIN_MINUTES]}
minutes=${2:-2}
device=${DEVICE:-cuda}
presets=${PRESETS:-tiny,small,base,course}
batch=${BATCH:-256}
seconds=${SECONDS_EACH:-2}
eval_epochs=${EVAL_EPOCHS:-150}
n=${N:-512}
work=$(mktemp -d)
mkdir -p "$out"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
td() { "${PYTHON:-python3}" -m tinydiffusion "$@"; }
{
  date -u; nvidia-smi -L 2>/dev/null; "${PYTHON:-python3}" -c 'import torch; print("torch", torch.__version__)'

  echo "== bench, 16x16 (then 32x32 for two presets)"
  td bench --device "$device" --presets "$presets" --batch-size "$batch" --eval-batches "1,64,$n" \
     --seconds "$seconds" --out "$out/bench_gpu.json"
  td bench --device "$device" --presets small --image-size 32 --batch-size "$batch" --eval-batches "1,64,$n" \
     --seconds "$seconds" --no-diffusers --out "$work/bench_gpu_32.json"

  echo "== shipped sprites model: class-conditional, small preset, 32x32, bf16"
  td train --device "$device" --precision bf16 --data sprites --model small --image-size 32 --batch-size "$batch" \
     --lr 2e-3 --warmup 200 --ema-decay 0.999 --minutes "$minutes" --sample-every 1000000 \
     --checkpoint-every 1000000 --log-every 200 --no-progress --out "$work/sprites"
  echo "== shipped emoji model: text-conditioned (all-MiniLM-L6-v2 caption embeddings), small preset, 32x32, bf16"
  td train --device "$device" --precision bf16 --data emoji --context text --encoder minilm --model small \
     --image-size 32 --batch-size "$batch" --lr 2e-3 --warmup 200 --ema-decay 0.999 --minutes "$minutes" \
     --sample-every 1000000 --checkpoint-every 1000000 --log-every 200 --no-progress --out "$work/emoji"

  echo "== sprite evaluators (held-out accuracy is recorded in each config.json)"
  for w in 48 64; do
    td evaluator train --device "$device" --data sprites --width "$w" --epochs "$eval_epochs" --no-progress \
       --out "$work/evaluators/w$w"
  done

  echo "== sampling throughput of the trained sprites model on this device"
  for s in "ddpm 500" "ddim 50" "dpmpp_2m 20"; do
    set -- $s
    td sample "$work/sprites/model" --device "$device" --sampler "$1" --steps "$2" --n "$n" --context hero \
       --batch-size "$n" --out "$work/throughput.npz"
  done
} 2>&1 | tee "$out/gpu_log.txt"
tar -C "$work" -cf "$out/models.tar" sprites/model sprites/metrics.csv sprites/samples/final.png \
    emoji/model emoji/metrics.csv emoji/samples/final.png
tar -C "$work" -cf "$out/evaluators.tar" evaluators
ls -la "$out"
