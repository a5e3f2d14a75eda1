#!/usr/bin/env bash
# The PIANO benchmark at GPU scale (bench/RESULTS.md, "PIANO benchmark on one GPU"):
#   bench/piano_benchmark_gpu.sh train MAESTRO_DIR OUT_DIR   # task-train gpt2_10M on MAESTRO train
#   bench/piano_benchmark_gpu.sh eval MAESTRO_DIR OUT_DIR    # score it and both baselines on validation
# Training has two stages: A puts the loss on every token (the model learns the music too), B
# fine-tunes A with prompt masking (loss on the target only). Wall-time caps keep each stage inside
# a 10-minute GPU slot; ITERS_A/ITERS_B size the cosine schedule to what fits.
set -euo pipefail
mode=$1
maestro=$2
out=$3
common=(--config-name=gpt2_piano dataset=maestro "dataset.path=$maestro" model=gpt2_10M
  tasks=piano_benchmark_pair data.context_size=1024 data.notes_per_record=128 data.batch_size=64
  "system.data_workers=${WORKERS:-12}" system.compile=true logging.progress_bar=false
  "out_dir=$out/runs" eval_iters=10 log_interval=50)

if [ "$mode" = train ]; then
  python -m piano_gpt.train "${common[@]}" run_name=pair-a prompt_masking=false \
    "optimizer.max_iters=${ITERS_A:-4000}" lr.learning_rate=2e-3 lr.min_lr=2e-4 lr.warmup_iters=100 \
    eval_interval=500 "max_train_minutes=${MINUTES_A:-5}"
  python -m piano_gpt.train "${common[@]}" run_name=pair-b prompt_masking=true \
    "optimizer.max_iters=${ITERS_B:-800}" lr.learning_rate=5e-4 lr.min_lr=5e-5 lr.warmup_iters=20 \
    eval_interval=200 "max_train_minutes=${MINUTES_B:-1.5}" "checkpoint_path=$out/runs/pair-a/pair-a-last"
elif [ "$mode" = eval ]; then
  for t in ${TEMPERATURES:-1.0 0.7}; do
    python -m piano_gpt.piano_eval "checkpoint_path=$out/runs/pair-b/pair-b-last" dataset=maestro \
      "dataset.path=$maestro" split=validation tasks=piano_benchmark_pair "n_samples=${N_SAMPLES:-50}" \
      notes_per_sample=128 "temperature=$t" "out_dir=$out/eval-t$t"
  done
else
  echo "usage: $0 train|eval MAESTRO_DIR OUT_DIR" >&2
  exit 2
fi
