"""The PIANO benchmark's report: Markdown tables, pictures and results files.

- :func:`fmt`, :func:`bold_best`, :func:`markdown_table`: the table helpers (also used by
  ``scripts/run_evaluation.py``'s model comparison);
- :func:`results_markdown`: one table per main metric (rows tasks, columns methods) and the model's
  target loss and stop reasons;
- :func:`write_results`: ``results.json``, ``results.md``, a bar chart of the main metrics and the
  pianorolls of a few samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from piano_gpt.evaluation.baselines import COPY_SOURCE
from piano_gpt.plots import plot_comparison


def fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def bold_best(cells: list, bold_ties: bool = True) -> list[str]:
    """The cells formatted, the best (highest) in bold; with ``bold_ties=False`` none when all tie."""
    known = [c for c in cells if c is not None]
    best = max(known) if known else None
    if len(cells) < 2 or (not bold_ties and best == min(known)):
        best = None
    return [f"**{fmt(c)}**" if c is not None and c == best else fmt(c) for c in cells]


def markdown_table(header: list[str], rows: list[list], align: str | None = None) -> list[str]:
    """The lines of a Markdown table; ``align``: ``l`` or ``r`` per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "".join("---:|" if a == "r" else "---|" for a in align)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def results_markdown(results: dict) -> str:
    """The markdown report: one table per main metric (rows tasks, columns methods) and the loss."""
    tasks = results["tasks"]
    methods = list(next(iter(tasks.values()))["methods"])
    title = results.get("title") or f"PIANO evaluation: {results['checkpoint']}"
    description = results.get("description") or (
        f"{results['dataset']} / {results['split']}, {results['n_samples']} samples per task, seed "
        f"{results['seed']}, settings {json.dumps(results['settings'])}. Metrics compare each method's "
        "notes with the target notes (higher is better); `overall` is the mean over tasks."
    )
    lines = [f"# {title}", "", description, ""]
    if results.get("problems"):  # a benchmark set's predictions: what was missing or unreadable
        problems = results["problems"]
        lines += ["## predictions: missing, unreadable, empty", ""]
        for kind in ("missing", "unreadable", "empty", "unknown"):
            ids = problems.get(kind) or []
            shown = [f"{i} ({ids[i]})" for i in ids] if isinstance(ids, dict) else list(ids)
            lines.append(f"- {kind}: {len(ids)}" + (f": {', '.join(shown)}" if shown else ""))
        lines.append("")
    for metric in results["main_metrics"]:
        rows = [(name, entry["methods"]) for name, entry in tasks.items()]
        rows.append(("**overall**", results["overall"]))
        table = [
            [name, *bold_best([values[m][metric] for m in methods], bold_ties=False)] for name, values in rows
        ]
        lines += [f"## {metric}", "", *markdown_table(["task", *methods], table), ""]
    if any("loss" in entry for entry in tasks.values()):  # the model was evaluated
        table = []
        for name, entry in tasks.items():
            loss = entry.get("loss", {})
            stops = ", ".join(f"{k} {v}" for k, v in sorted(entry.get("stop_reasons", {}).items()))
            table.append([name, fmt(loss.get("target_token_loss")), loss.get("n_tokens"), stops])
        if "loss" in results["overall"]:
            loss = results["overall"]["loss"]
            table.append(["**overall**", fmt(loss["target_token_loss"]), loss["n_tokens"], ""])
        header = ["task", "target token loss", "target tokens", "stop reasons"]
        lines += ["## model: target token loss and stop reasons", ""]
        lines += [*markdown_table(header, table, "lrrl"), ""]
    return "\n".join(lines)


def write_results(
    results: dict,
    out_dir: Path,
    samples: dict | None = None,
    generations: dict | None = None,
    n_plots: int = 4,
) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "results.json", out_dir / "results.md"]
    written[0].write_text(json.dumps(results, indent=1))
    written[1].write_text(results_markdown(results))
    if n_plots > 0:
        written.append(plot_metric_bars(results, out_dir / "metrics.png"))
        if samples and generations:
            written += plot_samples(samples, generations, out_dir, n_plots)
    return written


def plot_metric_bars(results: dict, path: Path) -> Path:
    """Grouped bars: for each main F1 metric, each task's mean per method."""
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"])
    methods = list(results["tasks"][tasks[0]]["methods"])
    metrics = [m for m in results["main_metrics"] if m != "key_correlation"]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(6, 1.2 * len(tasks) + 3), 2.6 * len(metrics)))
    axes = np.atleast_1d(axes)
    x = np.arange(len(tasks) + 1)
    width = 0.8 / len(methods)
    for ax, metric in zip(axes, metrics):
        for k, method in enumerate(methods):
            values = [results["tasks"][t]["methods"][method][metric] for t in tasks]
            values.append(results["overall"][method][metric])
            ax.bar(x + (k - (len(methods) - 1) / 2) * width, values, width, label=method)
        ax.set_title(metric)
        ax.set_ylim(0, 1)
        ax.set_xticks(x, [*tasks, "overall"], rotation=20, ha="right", fontsize="small")
    axes[0].legend(fontsize="small", ncol=len(methods))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_samples(samples: dict, generations: dict, out_dir: Path, n_plots: int) -> list[Path]:
    """Pianorolls (source / target / each method) of the first sample of the first ``n_plots`` tasks."""
    import matplotlib.pyplot as plt

    paths = []
    for task_name in list(samples)[:n_plots]:
        item, made = samples[task_name][0], generations[task_name][0]
        parts = {"source": item.source, "target": item.target}
        parts.update({name: notes for name, notes in made.items() if name != COPY_SOURCE})
        title = f"{task_name}: sample 0 ({item.source_info.get('title') or 'record ' + str(item.record)})"
        path = out_dir / f"pianoroll-{task_name}-0.png"
        fig = plot_comparison(parts, title=title)
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


__all__ = [
    "bold_best",
    "fmt",
    "markdown_table",
    "plot_metric_bars",
    "plot_samples",
    "results_markdown",
    "write_results",
]
