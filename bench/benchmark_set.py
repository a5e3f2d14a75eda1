"""Reference results of a frozen PIANO set: export it, then score the two baselines on it.

    python bench/benchmark_set.py                                   # MAESTRO test, piano_default, 50 per task
    python bench/benchmark_set.py --n-samples 10 --out tmp/bench/maestro-test-10

The same as ``piano-gpt benchmark export ...`` followed by ``piano-gpt benchmark score`` of a baseline's
predictions; here the baselines are scored without writing prediction files. Prints a markdown block
(header line with date, machine, load, the set's content hash; one row per task and overall) to copy
into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

from piano_gpt.evaluation.benchmark import export_set, load_set
from piano_gpt.evaluation.report import fmt, markdown_table
from piano_gpt.evaluation.scoring import MAIN_METRICS, baseline_predictions, overall, score_predictions

MAESTRO = Path(__file__).resolve().parents[2] / "shared" / "data" / "maestro"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maestro", default=str(MAESTRO), help="the MAESTRO folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--tasks", default="piano_default")
    parser.add_argument("--n-samples", type=int, default=50, help="samples per task (default 50)")
    parser.add_argument("--notes-per-sample", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="tmp/bench/maestro-test", help="where the set is written")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    started = time.time()
    dataset = {"name": "maestro", "type": "maestro", "path": args.maestro, "extra_datasets": []}
    manifest = export_set(
        args.out, dataset, args.split, args.tasks, args.n_samples, args.seed, args.notes_per_sample
    )
    exported = time.time() - started
    _, samples = load_set(args.out, with_targets=True)
    per_task = score_predictions(samples, baseline_predictions(samples))
    total = overall(per_task)
    scored = time.time() - started - exported

    methods = list(total)
    header = ["task"] + [f"{m}: {metric.split('/')[0]} {metric.split('/')[1] if '/' in metric else ''}".strip()
                         for metric in MAIN_METRICS for m in methods]  # fmt: skip
    rows = [
        [name, *(fmt(entry["methods"][m][metric]) for metric in MAIN_METRICS for m in methods)]
        for name, entry in per_task.items()
    ]
    rows.append(
        ["**overall**", *(f"**{fmt(total[m][metric])}**" for metric in MAIN_METRICS for m in methods)]
    )
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"{now}, {platform.machine()} {os.cpu_count()} cores, load {load_before:.2f} before / "
        f"{os.getloadavg()[0]:.2f} after; export {exported:.1f} s, scoring {scored:.1f} s. Set "
        f"{manifest['source']} / {manifest['split']}, {manifest['n_samples']} samples "
        f"({manifest['n_samples_per_task']} x {len(manifest['tasks'])} tasks), seed {manifest['seed']}, "
        f"{manifest['notes_per_sample']} notes per window, content hash `{manifest['content_hash']}`.\n"
    )
    print("\n".join(markdown_table(header, rows)))


if __name__ == "__main__":
    main()
