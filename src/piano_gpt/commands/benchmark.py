"""piano-gpt benchmark export|predict|score: PIANO as a frozen set that any system can be scored on.

    piano-gpt benchmark export --split test --tasks piano_default --out DIR [--source demo|maestro|hf --path P]
    piano-gpt benchmark predict --set DIR (--checkpoint C | --baseline copy_source) --out P(.parquet|folder)
    piano-gpt benchmark score --set DIR --predictions P [--name NAME] [--out-dir D]

The library: ``piano_gpt.evaluation.benchmark`` (the set's layout and the exchange format).
"""

from __future__ import annotations

import argparse

from piano_gpt.commands.base import CommandError

SOURCES = ("demo", "maestro", "hf")


def add_benchmark_args(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="action")

    export = actions.add_parser("export", help="write a frozen benchmark set (samples, targets, card)")
    export.add_argument("--out", required=True, help="the set's folder")
    export.add_argument("--source", choices=SOURCES, default="demo", help="where the pieces come from")
    export.add_argument(
        "--path", default=None, help="MAESTRO folder (maestro) or HF dataset name/folder (hf)"
    )
    export.add_argument("--split", default="test", choices=("train", "validation", "test"))
    export.add_argument(
        "--tasks", default="piano_default", help="a task set, or task names separated by commas"
    )
    export.add_argument("--n-samples", type=int, default=10, help="samples per task (default 10)")
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--notes-per-sample", type=int, default=128, help="notes per window (default 128)")
    export.add_argument(
        "--shards-dir", default=None, help="reuse a shards cache (default: read the source afresh)"
    )
    export.set_defaults(func=export_command)

    predict = actions.add_parser("predict", help="a checkpoint's (or a baseline's) predictions for a set")
    predict.add_argument("--set", required=True, dest="set_dir", help="the set's folder")
    predict.add_argument("--out", required=True, help="a .parquet file, or a folder for MIDI files")
    who = predict.add_mutually_exclusive_group(required=True)
    who.add_argument("--checkpoint", default=None, help="a task-trained checkpoint folder")
    who.add_argument("--baseline", default=None, help="copy_source or random_histogram")
    predict.add_argument("--device", default="auto")
    predict.add_argument("--budget-factor", type=float, default=2.0)
    predict.add_argument("--temperature", type=float, default=1.0)
    predict.add_argument("--top-k", type=int, default=None)
    predict.add_argument("--top-p", type=float, default=1.0)
    predict.set_defaults(func=predict_command)

    score = actions.add_parser("score", help="score predictions for a set (JSON + markdown)")
    score.add_argument("--set", required=True, dest="set_dir", help="the set's folder")
    score.add_argument("--predictions", required=True, help="a folder of <sample_id>.mid files or a parquet")
    score.add_argument("--name", default=None, help="the system's name in the tables (default: file name)")
    score.add_argument("--out-dir", default=None, help="default: <predictions>-scores next to them")
    score.set_defaults(func=score_command)


def _user_errors():
    from piano_gpt.evaluation.piano_eval import EvaluationError
    from piano_gpt.midi import MidiReadError
    from piano_gpt.train.checkpoint import CheckpointError

    return (EvaluationError, FileNotFoundError, MidiReadError, CheckpointError)


def dataset_of(args: argparse.Namespace) -> dict:
    if args.source == "demo":
        return {"name": "demo", "type": "demo", "extra_datasets": []}
    if not args.path:
        raise CommandError(f"--source {args.source} needs --path (the MAESTRO folder or the HF dataset)")
    if args.source == "maestro":
        return {"name": "maestro", "type": "maestro", "path": args.path, "extra_datasets": []}
    return {"name": "hf", "type": "hf", "base_datasets": [args.path], "extra_datasets": []}


def export_command(args: argparse.Namespace) -> int:
    from piano_gpt.evaluation.benchmark import export_set

    tasks = args.tasks.split(",") if "," in args.tasks else args.tasks
    try:
        manifest = export_set(
            args.out, dataset_of(args), args.split, tasks, args.n_samples, args.seed, args.notes_per_sample,
            args.shards_dir,
        )  # fmt: skip
    except _user_errors() as error:
        raise CommandError(str(error)) from error
    print(
        f"wrote {args.out}: {manifest['n_samples']} samples ({len(manifest['tasks'])} tasks), "
        f"content hash {manifest['content_hash']}"
    )
    return 0


def predict_command(args: argparse.Namespace) -> int:
    from piano_gpt.evaluation.benchmark import predict_set

    try:
        done = predict_set(
            args.set_dir, args.out, checkpoint=args.checkpoint, baseline=args.baseline, device=args.device,
            budget_factor=args.budget_factor, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            progress=True,
        )  # fmt: skip
    except _user_errors() as error:
        raise CommandError(str(error)) from error
    stops = f" (stop reasons {done['stop_reasons']})" if done["stop_reasons"] else ""
    print(f"wrote {done['n_predictions']} predictions to {done['out']}{stops}")
    return 0


def score_command(args: argparse.Namespace) -> int:
    from piano_gpt.evaluation.benchmark import score_set
    from piano_gpt.evaluation.report import results_markdown

    try:
        results = score_set(args.set_dir, args.predictions, args.name, args.out_dir)
    except _user_errors() as error:
        raise CommandError(str(error)) from error
    print(results_markdown(results))
    print(f"results: {results['out_dir']}")
    return 0
