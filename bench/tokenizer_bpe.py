"""Awesome (BPE) tokenizer vs the exponential base tokenizer on MAESTRO.

    /work/venv/bin/python bench/tokenizer_bpe.py [--vocab 2000 5000 10000] [--minutes 8] [--train-files N]

1. Runs the README pipeline in-process for ``dataset=maestro``: ``prepare_tokenizer_dataset`` (the
   tokenized MAESTRO train split) and ``train_tokenizer`` for each vocabulary size. ``--train-files N``
   trains on the first N train files only (a separate dump and tokenizers dir, so the subset tokenizers
   never pass for full-train ones).
2. Tokens per note on the MAESTRO validation split: the validation shards built for each tokenizer
   (the records training sees: pieces cut at long pauses, piano pitch range).
3. Trains ``model=gpt2_10M`` for ``--minutes`` of wall time with each tokenizer
   (``python -m piano_gpt.train dataset=maestro max_train_minutes=...``; the same command line otherwise)
   and measures bits per note on a fixed set of validation records: every token of each record is scored
   (windows of ``context_size + 1`` tokens overlapping by one, as ``make_example`` builds them), so the
   summed NLL / notes / ln 2 is exact for those records and the same notes are scored for every tokenizer.

Everything lands under ``tmp/`` (dumps, tokenizers, shards, ``tmp/bench/tokenizer_bpe/``); finished
steps are reused on a re-run (``--fresh`` retrains the models). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
WORK = Path("tmp/bench/tokenizer_bpe")


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from piano_gpt.configs import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return hydra_compose("tokenizer_training", overrides=overrides)


def dataset_overrides(args) -> list[str]:
    return ["dataset=maestro"] + ([f"dataset.path={args.maestro}"] if args.maestro else [])


def tokenizer_overrides(vocab: int | None, args) -> list[str]:
    """Overrides naming one tokenizer (None: the exponential base), for training and tokenizer_training."""
    if vocab is None:
        return ["tokenizer=exponential"]
    out = ["tokenizer=awesome", f"tokenizer.vocab_size={vocab}"]
    if args.train_files:
        out.append(f"tokenizer.tokenizers_dir={WORK}/tokenizers-first{args.train_files}")
    return out


def train_tokenizers(args) -> dict:
    """Dump MAESTRO train and train one awesome tokenizer per vocabulary size (reused when present)."""
    from piano_gpt.commands.prepare_tokenizer_dataset import (
        prepare,
        tokenizer_dataset_path,
        write_tokenizer_dataset,
    )
    from piano_gpt.commands.train_tokenizer import train_tokenizer
    from piano_gpt.data.sources import dataset_items
    from piano_gpt.tokenizers.awesome import base_tokenizer_from_config, trained_tokenizer_path

    info = {}
    for vocab in args.vocab:
        overrides = [*dataset_overrides(args), *tokenizer_overrides(vocab, args)]
        if args.train_files:
            overrides.append(f"tokenizer_datasets_dir={WORK}/datasets-first{args.train_files}")
        cfg = compose(overrides + ["progress_bar=false"])
        dump = tokenizer_dataset_path(cfg)
        started = time.time()
        if not dump.exists():
            if args.train_files:
                from omegaconf import OmegaConf

                dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
                items = dataset_items(dataset_cfg, "train")[: args.train_files]
                base = base_tokenizer_from_config(cfg.tokenizer)
                stats = write_tokenizer_dataset(dataset_cfg, base, dump, progress=False, items=items)
                dump.with_suffix(".json").write_text(json.dumps(stats, indent=1))
            else:
                prepare(cfg)
            print(f"dump {dump}: {time.time() - started:.0f} s", file=sys.stderr)
        path = trained_tokenizer_path(cfg.dataset, cfg.tokenizer)
        started = time.time()
        if not path.exists():
            train_tokenizer(cfg)
            print(f"tokenizer {path}: {time.time() - started:.0f} s", file=sys.stderr)
        info[vocab] = {"path": str(path), "dump": str(dump), "train_seconds": round(time.time() - started, 1)}
    return info


def run_name(vocab: int | None, args) -> str:
    return (
        "exponential"
        if vocab is None
        else f"awesome-{vocab}" + (f"-first{args.train_files}" if args.train_files else "")
    )


def train_model(vocab: int | None, args) -> Path:
    """``python -m piano_gpt.train`` for ``--minutes`` with this tokenizer; returns the last checkpoint."""
    name = run_name(vocab, args)
    run_dir = WORK / "runs" / name
    last = run_dir / f"{name}-last"
    if (last / "manifest.json").exists() and not args.fresh:
        return last
    command = [
        sys.executable,
        "-m",
        "piano_gpt.train",
        *dataset_overrides(args),
        *tokenizer_overrides(vocab, args),
        "model=gpt2_10M",
        f"max_train_minutes={args.minutes}",
        "optimizer.max_iters=100000",
        "lr.warmup_iters=20",
        f"data.batch_size={args.batch_size}",
        f"data.context_size={args.context_size}",
        "eval_interval=100000",
        "eval_iters=4",
        "log_interval=10",
        "system.device=cpu",
        "logging.progress_bar=false",
        f"out_dir={WORK / 'runs'}",
        f"run_name={name}",
    ]
    print(" ".join(command), file=sys.stderr)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(WORK / f"train-{name}.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=os.getcwd())
    return last


def eval_records(shards, target_notes: int) -> list[int]:
    """Records in a fixed shuffled order until ``target_notes`` notes (the same records for every
    tokenizer: validation records do not depend on the tokenizer)."""
    chosen, notes = [], 0
    for i in np.random.default_rng(0).permutation(len(shards)):
        if notes >= target_notes:
            break
        chosen.append(int(i))
        notes += int(shards.index.note_count.iloc[i])
    return sorted(chosen)


def subset(shards, records: list[int]):
    """A view of ``shards`` holding only ``records`` (its index rows point into the same arrays)."""
    from piano_gpt.data.shards import SplitShards

    index = shards.index.iloc[records].reset_index(drop=True)
    return SplitShards(shards.root, shards.tokens, shards.notes, index)


@torch.no_grad()
def own_evaluate_loss(model, tokenizer, shards, batch_size: int = 16) -> dict:
    """NLL (nats) summed over every token but each record's first, in windows of ``block_size + 1``
    tokens overlapping by one (what ``piano_gpt.evaluation.loss.evaluate_loss`` does, for trees
    without it)."""
    from piano_gpt.data.datasets import make_example
    from piano_gpt.tokenizers import GENAI_TOKEN

    context = model.config.block_size
    genai = tokenizer.token_to_id.get(GENAI_TOKEN)
    examples = []
    for i in range(len(shards)):
        ids = np.asarray(shards.record_tokens(i), dtype=np.int64)
        for start in range(0, max(1, len(ids) - 1), context):
            window = ids[start : start + context + 1]
            examples.append(make_example(window, context, tokenizer, model.config.max_music_time, genai))
    total, n_tokens = 0.0, 0
    for first in range(0, len(examples), batch_size):
        chunk = examples[first : first + batch_size]
        targets = torch.stack([e["targets"] for e in chunk])
        logits, _ = model(
            torch.stack([e["input_ids"] for e in chunk]),
            torch.stack([e["time_steps"] for e in chunk]),
            targets,
        )
        total += float(
            torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(),
                targets.reshape(-1),
                ignore_index=-1,
                reduction="sum",
            )
        )
        n_tokens += int((targets != -1).sum())
    notes = shards.n_notes
    return {
        "loss": total / n_tokens,
        "bits_per_note": total / notes / math.log(2),
        "nll_nats": total,
        "n_tokens": n_tokens,
        "n_notes": notes,
    }


def find_eval_loss():
    """``piano_gpt.evaluation.loss.evaluate_loss`` (behind ``python -m piano_gpt.eval``), or None."""
    try:
        from piano_gpt.evaluation.loss import evaluate_loss
    except ImportError:
        return None
    return evaluate_loss


def bits_per_note(checkpoint: Path, shards, records: list[int]) -> dict:
    from piano_gpt.train.checkpoint import load_checkpoint

    model, tokenizer, _ = load_checkpoint(str(checkpoint), device="cpu")
    view = subset(shards, records)
    evaluate_loss = find_eval_loss()
    if evaluate_loss is not None:
        figures = evaluate_loss(model, tokenizer, view, batch_size=16)
    else:
        figures = own_evaluate_loss(model, tokenizer, view)
    return {k: figures[k] for k in ("loss", "bits_per_note", "nll_nats", "n_tokens", "n_notes")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--maestro", default=None, help="dataset.path (default: the config's, ../shared/data/maestro)"
    )
    parser.add_argument("--vocab", type=int, nargs="+", default=[2000, 5000, 10000])
    parser.add_argument(
        "--train-files", type=int, default=None, help="tokenizers from the first N train files"
    )
    parser.add_argument("--minutes", type=float, default=8.0, help="training wall time per model")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--context-size", type=int, default=256)
    parser.add_argument("--eval-notes", type=int, default=20000, help="validation notes scored per model")
    parser.add_argument("--no-models", action="store_true", help="tokens per note only")
    parser.add_argument("--fresh", action="store_true", help="retrain the models")
    args = parser.parse_args()

    from omegaconf import OmegaConf

    from piano_gpt.data.shards import build_shards
    from piano_gpt.tokenizers import ExponentialTimeTokenizer, load_tokenizer

    os.chdir(REPO)  # the configs' relative paths (dataset.path, tmp/...) are from the repo root
    WORK.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    started = time.time()
    tokenizer_info = train_tokenizers(args)
    dataset_cfg = OmegaConf.to_container(compose(dataset_overrides(args)).dataset)

    rows = []
    records = None
    for vocab in [None, *args.vocab]:
        tokenizer = (
            ExponentialTimeTokenizer() if vocab is None else load_tokenizer(tokenizer_info[vocab]["path"])
        )
        shards = build_shards(dataset_cfg, tokenizer, splits=("validation",))["validation"]
        row = {
            "tokenizer": "exponential (base)" if vocab is None else f"awesome {vocab}",
            "vocab_size": tokenizer.vocab_size,
            "val_notes": shards.n_notes,
            "val_tokens": shards.n_tokens,
            "tokens_per_note": shards.n_tokens / shards.n_notes,
        }
        if not args.no_models:
            checkpoint = train_model(vocab, args)
            log = [
                json.loads(line)
                for line in (checkpoint.parent / "log.jsonl").read_text().splitlines()
                if line
            ]
            row["iters"] = max(r["iter"] for r in log)
            row["val_loss_per_token"] = next((r["val_loss"] for r in reversed(log) if "val_loss" in r), None)
            records = records if records is not None else eval_records(shards, args.eval_notes)
            row.update(bits_per_note(checkpoint, shards, records))
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    result = {
        "args": vars(args),
        "tokenizers": {str(k): v for k, v in tokenizer_info.items()},
        "rows": rows,
        "eval_loss_function": "piano_gpt.evaluation.loss.evaluate_loss" if find_eval_loss() else "own",
        "seconds": round(time.time() - started),
    }
    (WORK / "results.json").write_text(json.dumps(result, indent=1))

    subset = f"first {args.train_files} train files" if args.train_files else "full MAESTRO train split"
    print(f"Tokenizers trained on: {subset}. Validation: MAESTRO validation split.")
    header = "| tokenizer | vocab | tokens/note (val) |"
    rule = "|---|---:|---:|"
    if not args.no_models:
        header += (
            f" iters in {args.minutes:g} min | val loss/token | bits/note ({rows[0]['n_notes']} val notes) |"
        )
        rule += "---:|---:|---:|"
    print(header)
    print(rule)
    for row in rows:
        line = f"| {row['tokenizer']} | {row['vocab_size']} | {row['tokens_per_note']:.3f} |"
        if not args.no_models:
            line += f" {row['iters']} | {row['loss']:.3f} | {row['bits_per_note']:.2f} |"
        print(line)


if __name__ == "__main__":
    main()
