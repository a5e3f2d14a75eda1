"""Compare several checkpoints on PIANO tasks: the same samples, the same seed, one table and one plot.

    python scripts/run_evaluation.py <model_paths> <device> [--tasks task1 task2 ...]
        [--n-samples 10] [--split validation] [--dataset demo] [--seed 0] [--out-dir DIR]
        [--notes-per-sample 128] [--shards-dir tmp/shards] [--n-plots 2]

``<model_paths>``: checkpoint folders, comma-separated (``ckptA,ckptB``) and/or several arguments
before the device; ``<device>``: cpu, cuda, cuda:N, mps or auto. ``--tasks``: task names or task sets
(default: piano_default). Example:

    python scripts/run_evaluation.py tmp/runs/a/a-best,tmp/runs/b/b-best cpu --tasks above_median_prediction

Each checkpoint goes through ``piano_gpt.evaluation.piano_eval.evaluate_checkpoint`` (its own
results, pianorolls included, in ``<out-dir>/<model>/``); the samples depend only on the dataset, the
split, the tasks and the seed, so every model (and both baselines, copy_source and random_histogram)
is scored on the same ones. ``<out-dir>`` (default ``tmp/piano_eval/compare-<dataset>-<split>-<time>``)
then holds ``comparison.md`` (one table per main metric: rows tasks + overall, columns the models and
the baselines; the target token loss per model), ``comparison.json`` (the same figures) and
``comparison.png`` (bars).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

try:
    import piano_gpt  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from piano_gpt.configs import dataset_config  # noqa: E402
from piano_gpt.evaluation.piano_eval import evaluate_checkpoint  # noqa: E402
from piano_gpt.evaluation.report import bold_best, fmt, markdown_table  # noqa: E402

DEVICE_PATTERN = re.compile(r"^(cpu|auto|mps|cuda(:\d+)?)$")
MODEL_METHOD = "model"


class UsageError(Exception):
    pass


# --- arguments ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_evaluation.py",
        usage="%(prog)s <model_paths> <device> [--tasks task1 task2 ...] [options]",
        description="Evaluate several checkpoints on PIANO tasks with the same samples; one comparison table.",
    )
    parser.add_argument(
        "positional",
        nargs="+",
        metavar="<model_paths> <device>",
        help="checkpoint folders (comma-separated and/or several), then the device (cpu, cuda, cuda:0, mps, auto)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["piano_default"],
        help="task names or task sets (default: piano_default)",
    )
    parser.add_argument("--n-samples", type=int, default=10, help="samples per task (default: 10)")
    parser.add_argument("--split", default="validation", choices=("validation", "test", "train"))
    parser.add_argument(
        "--dataset", default="demo", help="dataset config name: demo, maestro, ... (default: demo)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="the samples' and the sampling's seed (default: 0)"
    )
    parser.add_argument(
        "--out-dir", default=None, help="default: tmp/piano_eval/compare-<dataset>-<split>-<time>"
    )
    parser.add_argument("--shards-dir", default="tmp/shards", help="token shards cache (default: tmp/shards)")
    parser.add_argument(
        "--notes-per-sample",
        type=int,
        default=None,
        help="notes in each sample's window (default: fitted to the first model's context, at most 128)",
    )
    parser.add_argument("--n-plots", type=int, default=2, help="pianorolls per model (default: 2)")
    return parser


def split_positional(values: list[str]) -> tuple[list[str], str]:
    """(checkpoint paths, device) from ``ckptA,ckptB cpu`` or ``ckptA ckptB cpu``."""
    if len(values) < 2:
        raise UsageError("give the checkpoint paths, then the device, e.g. run_evaluation.py ckptA,ckptB cpu")
    *paths, device = values
    if not DEVICE_PATTERN.match(device):
        raise UsageError(
            f"the last positional argument is the device (cpu, cuda, cuda:0, mps, auto), not {device!r}"
        )
    models = [p.strip() for value in paths for p in value.split(",") if p.strip()]
    if not models:
        raise UsageError("no checkpoint path given")
    return models, device


def task_names(values: list[str]) -> list[str]:
    return [t.strip() for value in values for t in value.split(",") if t.strip()]


def model_labels(paths: list[str]) -> list[str]:
    """A short unique label per checkpoint: its folder name, with parents added where names repeat."""
    resolved = [Path(p).resolve() for p in paths]
    if len(set(resolved)) < len(resolved):  # the same checkpoint more than once: numbered
        return [f"{r.name}#{i + 1}" for i, r in enumerate(resolved)]
    depths = [1] * len(resolved)
    while True:
        labels = ["/".join(r.parts[-d:]).lstrip("/") for r, d in zip(resolved, depths)]
        clashing = [i for i, label in enumerate(labels) if labels.count(label) > 1]
        if not clashing:
            break
        for i in clashing:  # only the labels that clash get longer
            depths[i] += 1
    return labels


# --- the comparison -------------------------------------------------------------------------------------


def compare(results: dict[str, dict]) -> dict:
    """One comparison of ``{label: evaluate_checkpoint results}`` (the same tasks and samples)."""
    first = next(iter(results.values()))
    tasks = list(first["tasks"])
    metrics = list(first["main_metrics"])
    for label, result in results.items():
        if list(result["tasks"]) != tasks:
            raise ValueError(f"{label}: evaluated on tasks {list(result['tasks'])}, the others on {tasks}")
    models = {}
    for label, result in results.items():
        loss = {t: (result["tasks"][t].get("loss") or {}).get("target_token_loss") for t in tasks}
        loss["overall"] = (result["overall"].get("loss") or {}).get("target_token_loss")
        models[label] = {
            "checkpoint": result["checkpoint"],
            "parameter_count": result.get("parameter_count"),
            "checkpoint_iter": result.get("checkpoint_iter"),
            "results_dir": result.get("out_dir"),
            "tasks": {t: _pick(result["tasks"][t]["methods"][MODEL_METHOD], metrics) for t in tasks},
            "overall": _pick(result["overall"][MODEL_METHOD], metrics),
            "target_token_loss": loss,
        }
    baselines = {}
    for method in first["tasks"][tasks[0]]["methods"]:
        if method == MODEL_METHOD:
            continue
        baselines[method] = {
            "tasks": {t: _pick(first["tasks"][t]["methods"][method], metrics) for t in tasks},
            "overall": _pick(first["overall"][method], metrics),
        }
    # The baselines depend on the samples only: equal figures for every model show the samples were the same.
    same_samples = all(
        _pick(r["tasks"][t]["methods"][m], metrics) == baselines[m]["tasks"][t]
        for r in results.values()
        for t in tasks
        for m in baselines
    )
    return {
        "dataset": first.get("dataset"),
        "split": first.get("split"),
        "seed": first.get("seed"),
        "n_samples": first.get("n_samples"),
        "settings": first.get("settings"),
        "tasks": tasks,
        "main_metrics": metrics,
        "same_samples": same_samples,
        "models": models,
        "baselines": baselines,
    }


def _pick(values: dict, metrics: list[str]) -> dict:
    return {m: values.get(m) for m in metrics}


def _columns(comparison: dict) -> list[tuple[str, dict]]:
    return [
        *comparison["models"].items(),
        *((f"{name} (baseline)", v) for name, v in comparison["baselines"].items()),
    ]


def comparison_markdown(comparison: dict) -> str:
    columns = _columns(comparison)
    lines = [
        "# PIANO evaluation: model comparison",
        "",
        f"{comparison['dataset']} / {comparison['split']}, {comparison['n_samples']} samples per task, seed "
        f"{comparison['seed']}; every model and baseline is scored on the same samples"
        + ("" if comparison["same_samples"] else " (WARNING: the baselines differ between runs)")
        + ". Higher is better; `overall` is the mean over tasks; the best of each row in bold.",
        "",
        "## models",
        "",
    ]
    models = [
        [
            label,
            f"`{model['checkpoint']}`",
            "-" if model["parameter_count"] is None else model["parameter_count"],
            "-" if model["checkpoint_iter"] is None else model["checkpoint_iter"],
            fmt(model["target_token_loss"]["overall"]),
        ]
        for label, model in comparison["models"].items()
    ]
    header = ["model", "checkpoint", "parameters", "iteration", "target token loss (overall)"]
    lines += [*markdown_table(header, models, "llrrr"), ""]
    rows = [*comparison["tasks"], "overall"]
    names = {row: "**overall**" if row == "overall" else row for row in rows}
    for metric in comparison["main_metrics"]:
        table = [
            [
                names[row],
                *bold_best(
                    [(v["overall"] if row == "overall" else v["tasks"][row])[metric] for _, v in columns]
                ),
            ]
            for row in rows
        ]
        lines += [f"## {metric}", "", *markdown_table(["task", *(name for name, _ in columns)], table), ""]
    table = [
        [names[row], *(fmt(m["target_token_loss"].get(row)) for m in comparison["models"].values())]
        for row in rows
    ]
    lines += ["## target token loss (lower is better)", ""]
    lines += [*markdown_table(["task", *comparison["models"]], table), ""]
    return "\n".join(lines)


def plot_comparison(comparison: dict, path: Path) -> Path:
    """One panel per main metric: grouped bars (tasks, then overall), one bar per model and baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = _columns(comparison)
    groups = [*comparison["tasks"], "overall"]
    metrics = comparison["main_metrics"]
    width_in = min(60.0, max(7.0, 0.18 * len(groups) * len(columns) + 3))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(width_in, 2.8 * len(metrics)), squeeze=False)
    x = np.arange(len(groups))
    bar = 0.8 / len(columns)
    for ax, metric in zip(axes[:, 0], metrics):
        lowest = 0.0
        for k, (name, values) in enumerate(columns):
            heights = [(values["overall"] if g == "overall" else values["tasks"][g])[metric] for g in groups]
            heights = [np.nan if h is None else h for h in heights]
            lowest = min(lowest, np.nanmin(heights) if not np.all(np.isnan(heights)) else 0.0)
            ax.bar(x + (k - (len(columns) - 1) / 2) * bar, heights, bar, label=name)
        ax.set_title(metric)
        ax.set_ylim(min(0.0, lowest - 0.05), 1.0)
        ax.set_xticks(x, groups, rotation=20, ha="right", fontsize="small")
    handles, names = axes[0, 0].get_legend_handles_labels()
    rows = -(-len(columns) // 4)
    fig.legend(handles, names, loc="upper center", fontsize="small", ncol=min(len(columns), 4), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 * rows / fig.get_figheight()))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_comparison(comparison: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "comparison.json", "markdown": out_dir / "comparison.md"}
    files["json"].write_text(json.dumps(comparison, indent=1))
    files["markdown"].write_text(comparison_markdown(comparison))
    files["plot"] = plot_comparison(comparison, out_dir / "comparison.png")
    return files


# --- main -----------------------------------------------------------------------------------------------


def evaluate(path: str, tasks: list[str], args, device: str, out_dir: Path) -> dict:
    options = {} if args.notes_per_sample is None else {"notes_per_sample": args.notes_per_sample}
    return evaluate_checkpoint(
        path,
        tasks,
        args.n_samples,
        args.split,
        dataset_config(args.dataset),
        args.seed,
        out_dir,
        device=device,
        shards_dir=args.shards_dir,
        n_plots=args.n_plots,
        progress=True,
        **options,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    try:
        paths, device = split_positional(args.positional)
    except UsageError as error:
        parser.error(str(error))
    tasks = task_names(args.tasks)
    if args.n_samples < 1:
        parser.error("--n-samples must be at least 1")

    from piano_gpt.train.checkpoint import CheckpointError, find_checkpoint

    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error(f"device {device}: no CUDA GPU here (use cpu)")
    try:  # fail on a typo before spending minutes on the others; a run folder gives its -best
        paths = [str(find_checkpoint(path)) for path in paths]
    except CheckpointError as error:
        parser.error(str(error))

    labels = model_labels(paths)
    out_dir = Path(
        args.out_dir or f"tmp/piano_eval/compare-{args.dataset}-{args.split}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    results = {}
    for label, path in zip(labels, paths):
        print(f"== {label}: {path}", flush=True)
        try:
            results[label] = evaluate(path, tasks, args, device, out_dir / label.replace("/", "__"))
        except (CheckpointError, ValueError) as error:  # EvaluationError is a ValueError
            print(f"run_evaluation.py: error: {label}: {error}", file=sys.stderr)
            return 1
        if args.notes_per_sample is None:  # every model sees the same samples: the first one's window
            args.notes_per_sample = results[label]["settings"]["notes_per_sample"]
    comparison = compare(results)
    files = write_comparison(comparison, out_dir)
    print(comparison_markdown(comparison))
    for kind, file in files.items():
        print(f"{kind}: {file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
