"""Model quality at a fixed training budget: the original recipe against every change, same run.

Each variant trains from scratch on the MAESTRO train split for the same number of training tokens
(``--budget-tokens``; wall time is reported beside it, but the budget is what is fixed, so machine
load does not move the result), then is scored on whole MAESTRO validation records with the loss
evaluation of ``python -m piano_gpt.eval`` (nats per token, bits per note, bits per second: the last
two do not depend on the tokenizer) and on continuations of real prompts
(``piano_gpt.evaluation.continuation``: note durations and polyphony against what the performers
played).

    python bench/quality.py                                  # every variant, the default budget
    python bench/quality.py --variants original piano --budget-tokens 1000000 --eval-records 40
    python bench/quality.py --list                           # the variants and their overrides

Results: a markdown table on stdout and in ``--out`` (JSON beside it); copy the table with its header
line (date, machine, load) into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

from hydra import compose, initialize_config_dir

from piano_gpt.configs import CONFIG_DIR
from piano_gpt.data.sources import dataset_items, item_notes
from piano_gpt.evaluation.continuation import continuation_prompts, evaluate_continuations
from piano_gpt.evaluation.loss import evaluate_loss
from piano_gpt.evaluation.piano_eval import open_split
from piano_gpt.train.checkpoint import load_checkpoint
from piano_gpt.train.loop import train

MAESTRO = Path(__file__).resolve().parents[2] / "shared" / "data" / "maestro"

# The original recipe is today's gpt2_* architecture with AdamW and the config defaults.
VARIANTS = {
    "original": ["model=gpt2_10M", "optimizer.name=adamw"],
    "original+muon": ["model=gpt2_10M", "optimizer.name=muon"],
    "piano-adamw": ["model=piano_10M", "optimizer.name=adamw"],
    "piano": ["model=piano_10M", "optimizer.name=muon"],
    "piano+augment": [
        "model=piano_10M",
        "optimizer.name=muon",
        "dataset.augmentation.max_pitch_shift=5",
        "dataset.augmentation.speed_change_factors=[0.95,1.05]",
    ],
}


def common_overrides(args) -> list[str]:
    tokens_per_step = args.batch_size * args.context_size
    steps = max(1, args.budget_tokens // tokens_per_step)
    return [
        "dataset=maestro",
        f"dataset.path={args.maestro}",
        f"data.batch_size={args.batch_size}",
        f"data.context_size={args.context_size}",
        f"optimizer.max_iters={steps}",
        f"lr.warmup_iters={max(1, steps // 20)}",
        f"lr.lr_decay_iters={steps}",
        f"lr.learning_rate={args.learning_rate}",
        f"lr.min_lr={args.learning_rate / 10}",
        f"eval_interval={steps}",
        "eval_iters=4",
        "logging.wandb_log=false",
        "logging.progress_bar=false",
        f"out_dir={args.work_dir}/runs",
    ]


def run_variant(name: str, args, seed: int) -> dict:
    overrides = [*common_overrides(args), *VARIANTS[name], f"seed={seed}", f"run_name=quality-{name}-{seed}"]
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("gpt2_pretraining", overrides=overrides)
    run_dir = Path(cfg.out_dir) / cfg.run_name
    last = run_dir / f"{cfg.run_name}-last"
    if not (args.reuse and (last / "manifest.json").exists()):
        run_dir = train(cfg)
    rates = [r["tokens_per_s"] for r in _log_rows(run_dir) if "tokens_per_s" in r]
    # Seconds of training from the logged step rates (also right for a reused run).
    tokens = int(cfg.optimizer.max_iters) * args.batch_size * args.context_size
    train_seconds = tokens * sum(1 / r for r in rates) / max(1, len(rates))
    model, tokenizer, _ = load_checkpoint(run_dir / f"{cfg.run_name}-last")
    dataset = {"name": "maestro", "type": "maestro", "path": str(args.maestro), "extra_datasets": []}
    shards = open_split(dataset, tokenizer, "validation", f"{args.work_dir}/shards")
    figures = evaluate_loss(
        model, tokenizer, shards, context_size=args.context_size, max_records=args.eval_records, batch_size=8
    )
    items = dataset_items(dataset, "validation")
    step = max(1, len(items) // args.prompts)
    pieces = [(item.label, item_notes(item)) for item in items[::step]]
    prompts = continuation_prompts(pieces, args.prompts, 48, args.continuation_seconds)
    continuation = evaluate_continuations(
        model, tokenizer, prompts, args.continuation_seconds, top_k=40, seed=0, max_new_tokens=4096
    )
    return {
        "variant": name,
        "seed": seed,
        "overrides": VARIANTS[name],
        "parameters": model.num_parameters(),
        "train_tokens": int(cfg.optimizer.max_iters) * args.batch_size * args.context_size,
        "train_seconds": round(train_seconds, 1),
        **{k: figures[k] for k in ("loss", "bits_per_note", "bits_per_second") if k in figures},
        "continuation": continuation,
    }


def _log_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]


def table(rows: list[dict]) -> str:
    base = next((r["bits_per_note"] for r in rows if r["variant"] == "original"), None)
    lines = [
        "| variant | seed | params | tokens | train s | nats/token | bits/note | vs original | bits/s "
        "| >2 s (gen / real) | poly p95 (gen / real) | longest s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g, real = r["continuation"]["generated"], r["continuation"]["real"]
        ratio = f"{r['bits_per_note'] / base - 1:+.1%}" if base else "-"
        lines.append(
            f"| {r['variant']} | {r['seed']} | {r['parameters'] / 1e6:.1f}M | {r['train_tokens']:,} "
            f"| {r['train_seconds']:.0f} | {r['loss']:.3f} | {r['bits_per_note']:.2f} | {ratio} "
            f"| {r['bits_per_second']:.1f} | {g['long_2s']:.3f} / {real['long_2s']:.3f} "
            f"| {g['polyphony_p95']:.0f} / {real['polyphony_p95']:.0f} | {g['longest']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337])
    parser.add_argument("--budget-tokens", type=int, default=3_000_000, help="training tokens per variant")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--context-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--eval-records", type=int, default=60, help="whole validation records scored")
    parser.add_argument("--prompts", type=int, default=6, help="continuation prompts (validation pieces)")
    parser.add_argument("--continuation-seconds", type=float, default=10.0)
    parser.add_argument("--maestro", type=Path, default=MAESTRO)
    parser.add_argument("--work-dir", default="tmp/bench_quality")
    parser.add_argument("--out", default="tmp/bench_quality/quality.md")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument(
        "--reuse", action="store_true", help="score a finished run of the same name, not retrain"
    )
    args = parser.parse_args()
    if args.list:
        for name, overrides in VARIANTS.items():
            print(f"{name}: {' '.join(overrides)}")
        return
    if not (args.maestro / "maestro-v3.0.0.csv").exists():
        parser.error(f"no MAESTRO at {args.maestro} (give --maestro DIR)")
    load_before = os.getloadavg()[0]
    rows = []
    for seed in args.seeds:
        for name in args.variants:
            rows.append(run_variant(name, args, seed))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    header = (
        f"{datetime.datetime.now().isoformat(timespec='minutes')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average before/after {load_before:.2f} / {os.getloadavg()[0]:.2f}; "
        f"budget {args.budget_tokens:,} tokens (batch {args.batch_size} x context {args.context_size}), "
        f"validation: {args.eval_records} whole records, {args.prompts} continuation prompts of "
        f"{args.continuation_seconds:.0f} s"
    )
    text = f"{header}\n\n{table(rows)}\n"
    print()
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
