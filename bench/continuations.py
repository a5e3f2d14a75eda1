"""Continuation plausibility of one checkpoint under generation settings side by side, same prompts.

Each setting generates ``--seconds`` of music after the first ``--prompt-notes`` notes of
``--prompts`` validation pieces (demo corpus by default, or a MAESTRO folder) and is compared with what
the performers played next (``piano_gpt.evaluation.continuation``). The peer is the engine without the
change under test, in the same run:

    python bench/continuations.py tmp/demo/demo/demo-best                      # held notes restated or not
    python bench/continuations.py CKPT --prompts 12 --settings '{"temperature": 0.9}' '{"top_p": 0.95}'
    python bench/continuations.py CKPT --maestro ../shared/data/maestro --prompts 6

Results: one row per setting on stdout; copy them with the header line into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

from piano_gpt.data.demo import load_demo_records
from piano_gpt.data.records import record_to_notes
from piano_gpt.data.sources import dataset_items, item_notes
from piano_gpt.evaluation.continuation import continuation_prompts, evaluate_continuations
from piano_gpt.train.checkpoint import find_checkpoint, load_checkpoint

DEFAULT_SETTINGS = ['{"carry_held_notes": false}', '{"carry_held_notes": true}']


def validation_pieces(maestro: Path | None, n_prompts: int) -> list:
    if maestro is None:
        return [
            (f"validation {i}", record_to_notes(r)) for i, r in enumerate(load_demo_records("validation"))
        ]
    dataset = {"name": "maestro", "type": "maestro", "path": str(maestro), "extra_datasets": []}
    items = dataset_items(dataset, "validation")
    step = max(1, len(items) // n_prompts)
    return [(item.label, item_notes(item)) for item in items[::step]]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="a checkpoint or run folder")
    parser.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, help="JSON generation options")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--prompt-notes", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--maestro", type=Path, default=None, help="MAESTRO folder (default: demo corpus)")
    args = parser.parse_args()

    model, tokenizer, _ = load_checkpoint(find_checkpoint(args.checkpoint))
    pieces = validation_pieces(args.maestro, args.prompts)
    prompts = continuation_prompts(pieces, args.prompts, args.prompt_notes, args.seconds)
    print(
        f"{datetime.datetime.now().isoformat(timespec='minutes')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; {args.checkpoint}, {len(prompts)} "
        f"prompts of {args.prompt_notes} notes, {args.seconds:.0f} s each, T=1, top-k 40 unless set"
    )
    print(
        "| setting | >2 s (gen / real) | >4 s (gen / real) | poly p95 (gen / real) | longest s | open (gen / real) | duration W |"
    )
    print("|---|---|---|---|---|---|---|")
    for setting in args.settings:
        options = {"temperature": 1.0, "top_k": 40, "seed": 0, "max_new_tokens": 4096, **json.loads(setting)}
        result = evaluate_continuations(model, tokenizer, prompts, args.seconds, **options)
        g, real = result["generated"], result["real"]
        print(
            f"| `{setting}` | {g['long_2s']:.1%} / {real['long_2s']:.1%} | {g['long_4s']:.1%} / {real['long_4s']:.1%} "
            f"| {g['polyphony_p95']:.0f} / {real['polyphony_p95']:.0f} | {g['longest']:.1f} "
            f"| {g.get('open_notes', '-')} / {real.get('open_notes', '-')} "
            f"| {result['distance']['duration_wasserstein']:.3f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
