"""The PIANO benchmark: a checkpoint and two baselines on the same task samples, scored by the PIANO metrics.

>>> results = evaluate_checkpoint("tmp/runs/run/run-best", "piano_default", n_samples=20,
...                               split="validation", dataset_cfg="maestro")
>>> results["overall"]["model"]["note_f1/onset/f1"]

For each task and sample ``j`` (``rng = default_rng([seed, crc32(task name), j])``, so the samples
depend only on the seed, the dataset split, the task and ``notes_per_sample``: every model and both
baselines see the same ones):

1. a record (weighted by its number of notes) and a window of ``notes_per_sample`` consecutive notes,
   times from 0 (as in task training, ``piano_gpt.data.task_datasets``), split by the task into
   source and target;
2. **model**: the task prompt (``build_task_prompt``: ``<N_NOTES_k>``, task tokens, the target's
   time span, the source, ``<GENAI>``) completed by the generation engine until ``<EOGENAI>`` or a
   budget: ``budget_factor`` x the target's notes, ``budget_factor`` x the window's duration (+1 s),
   or the model's context; plus the teacher-forced loss of the target tokens (and ``<EOGENAI>``);
3. **copy_source**: the generation is the source notes;
4. **random_histogram**: as many notes as the target, pitches / velocities / durations drawn from the
   source's empirical distributions, onsets uniform over the source's time span (seeded);
5. ``compute_all_metrics(target, generation)`` for each method.

Results (``results.json``): per task, per method, the metric means over the samples, the per-sample
main metrics, the model's target loss and stop reasons; ``overall``: per method, the mean over tasks
of the task means. ``results.md``: one table per main metric (rows tasks, columns methods) and the
loss table; pictures: the pianorolls of a few samples and a bar chart of the main metrics.

What the baselines show: on a selection task (masking, pitch / velocity splits) the source and target
are disjoint sets of the same piece's notes, so copy_source is a prediction of the *rest* of the piece:
scored against the target its note F1 is 0 unless a source note repeats a target pitch within the
onset tolerance (50 ms); scored against the whole piece it has precision 1. On denoising and
performance tasks copy_source is the noisy / "score" version of the target: a strong baseline.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from piano_gpt.common import pick_device
from piano_gpt.configs import CONFIG_DIR
from piano_gpt.data.datasets import make_example
from piano_gpt.data.shards import SplitShards, build_shards
from piano_gpt.data.task_datasets import draw_window, record_weights
from piano_gpt.evaluation.baselines import (
    BASELINES,
    COPY_SOURCE,
    RANDOM_HISTOGRAM,
    copy_source_baseline,
    random_histogram_baseline,
)
from piano_gpt.evaluation.metrics import average_metrics, compute_all_metrics
from piano_gpt.midi import empty_notes
from piano_gpt.tasks import Task, TaskSample, build_task_prompt, build_task_sequence, resolve_tasks
from piano_gpt.tokenizers import EOGENAI_TOKEN, GENAI_TOKEN, MidiTokenizer, tokenizer_from_dict

MODEL = "model"
METHODS = (MODEL, COPY_SOURCE, RANDOM_HISTOGRAM)
MAIN_METRICS = (
    "note_f1/onset/f1",
    "f1_over_time/pitch/f1",
    "f1_over_time/pitch_class/f1",
    "key_correlation",
)
DEFAULT_NOTES_PER_SAMPLE = 128  # data.notes_per_record of gpt2_piano
MIN_BUDGET_NOTES = 8
STOP_PROMPT_TOO_LONG = "prompt_too_long"


class EvaluationError(ValueError):
    """An evaluation request that cannot run; the message says what to change."""


# --- inputs -----------------------------------------------------------------------------------------


def load_dataset_cfg(dataset_cfg: dict | DictConfig | str | None) -> dict:
    """A dataset config as a dict: a dict / DictConfig, or the name of ``configs/dataset/<name>.yaml``
    (None: ``demo``)."""
    if dataset_cfg is None:
        dataset_cfg = "demo"
    if isinstance(dataset_cfg, str):
        path = CONFIG_DIR / "dataset" / f"{dataset_cfg}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in (CONFIG_DIR / "dataset").glob("*.yaml"))
            raise EvaluationError(f"dataset={dataset_cfg}: no such dataset config; known: {known}")
        dataset_cfg = OmegaConf.load(path)
    if isinstance(dataset_cfg, DictConfig):
        dataset_cfg = OmegaConf.to_container(dataset_cfg, resolve=True)
    return dict(dataset_cfg)


def shards_tokenizer(tokenizer: MidiTokenizer) -> MidiTokenizer:
    """A copy of ``tokenizer`` with only the default special tokens: the one training built its shards
    with (task and composer tokens are added after the shards), so the shards are found, not rebuilt.
    Music tokens do not depend on special tokens, so the shards' tokens are the checkpoint's."""
    data = json.loads(json.dumps(tokenizer.to_dict()))
    holder = data.get("base", data)
    if isinstance(holder, dict) and "special_tokens" in holder:
        holder["special_tokens"] = []
    return tokenizer_from_dict(data)


def open_split(
    dataset_cfg, tokenizer: MidiTokenizer, split: str, cache_dir: str | Path = "tmp/shards"
) -> SplitShards:
    """The shards of one split of a dataset (built on first use, then reused)."""
    if split not in ("train", "validation", "test"):
        raise EvaluationError(f"split={split}: use validation, test or train")
    dataset_cfg = load_dataset_cfg(dataset_cfg)
    return build_shards(dataset_cfg, shards_tokenizer(tokenizer), cache_dir, splits=(split,))[split]


def as_task_list(tasks) -> list[Task]:
    if isinstance(tasks, DictConfig):
        tasks = tasks.get("names")
    if not isinstance(tasks, str) and tasks is not None and not isinstance(tasks, list | tuple):
        tasks = OmegaConf.to_container(tasks, resolve=True)
    try:
        resolved = resolve_tasks(tasks)
    except KeyError as error:
        raise EvaluationError(str(error).strip('"')) from error
    if not resolved:
        raise EvaluationError(f"tasks={tasks!r}: no task to evaluate (name a task set or tasks)")
    return resolved


@dataclass
class EvalSample:
    """One benchmark sample: a window of a record split by a task."""

    task: Task
    index: int
    record: int
    first: int
    notes: pd.DataFrame
    sample: TaskSample
    task_seed: int
    source_info: dict

    @property
    def source(self) -> pd.DataFrame:
        return self.sample.source

    @property
    def target(self) -> pd.DataFrame:
        return self.sample.target


def task_rng(seed: int, task_name: str, index: int, stream: int = 0) -> np.random.Generator:
    """The rng of sample ``index`` of a task (stream 0: the sample; 1: the random baseline)."""
    return np.random.default_rng([int(seed), zlib.crc32(task_name.encode()), int(index), int(stream)])


def eval_samples(
    shards: SplitShards,
    tasks: list[Task],
    n_samples: int,
    seed: int = 0,
    notes_per_sample: int = DEFAULT_NOTES_PER_SAMPLE,
) -> dict[str, list[EvalSample]]:
    """``n_samples`` samples per task; a pure function of (shards, task names, seed, notes_per_sample)."""
    if n_samples < 1:
        raise EvaluationError(f"n_samples={n_samples}: must be >= 1")
    cumulative = record_weights(shards)
    out: dict[str, list[EvalSample]] = {}
    for task in tasks:
        samples = []
        for j in range(n_samples):
            rng = task_rng(seed, task.name, j)
            record, first, notes = draw_window(shards, cumulative, rng, int(notes_per_sample))
            task_seed = int(rng.integers(2**31))
            sample = task.prepare(notes, task_seed)
            info = shards.record_source(record)
            samples.append(EvalSample(task, j, record, first, notes, sample, task_seed, info))
        out[task.name] = samples
    return out


# --- baselines (piano_gpt.evaluation.baselines) ---------------------------------------------------


def baseline_generation(method: str, item: EvalSample, seed: int) -> pd.DataFrame:
    return BASELINES[method](item.source, len(item.target), task_rng(seed, item.task.name, item.index, 1))


# --- the model --------------------------------------------------------------------------------------


@torch.no_grad()
def target_loss(model, tokenizer: MidiTokenizer, sample: TaskSample) -> tuple[float, int]:
    """(summed NLL in nats, number of tokens) of the target tokens and ``<EOGENAI>``, teacher-forced.

    The sequence is cut to the model's context (a target that does not fit counts only its tokens
    inside the window)."""
    ids, loss_mask = build_task_sequence(tokenizer, sample)
    block = model.config.block_size
    n = min(len(ids), block + 1)
    example = make_example(
        ids[:n],
        n - 1,
        tokenizer,
        model.config.max_music_time,
        tokenizer.token_to_id.get(GENAI_TOKEN),
        loss_mask[:n],
    )
    device = next(model.parameters()).device
    targets = example["targets"][None].to(device)
    count = int((targets != -1).sum())
    if count == 0:
        return 0.0, 0
    _, loss = model(example["input_ids"][None].to(device), example["time_steps"][None].to(device), targets)
    return float(loss) * count, count


def model_generation(
    model,
    tokenizer: MidiTokenizer,
    item: EvalSample,
    budget_factor: float = 2.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
) -> tuple[pd.DataFrame, str, int]:
    """(generated target notes, stop reason, generated tokens) of the model on one sample."""
    from piano_gpt.generation import GenerationConfig, complete_samples

    prompt = build_task_prompt(tokenizer, item.sample)
    room = model.config.block_size - len(prompt)
    if room < 1:
        return empty_notes(), STOP_PROMPT_TOO_LONG, 0
    window_end = float(item.notes["end"].max()) if len(item.notes) else 0.0
    config = GenerationConfig(
        n_samples=1,
        seed=item.task_seed,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=room,
        max_notes=max(MIN_BUDGET_NOTES, math.ceil(budget_factor * len(item.target))),
        max_duration=budget_factor * window_end + 1.0,
    )
    generation = complete_samples(model, tokenizer, prompt, config, context=item.source)[0]
    return generation.notes, generation.stop_reason, generation.n_tokens


def check_task_tokens(tokenizer: MidiTokenizer, tasks: list[Task], checkpoint: str) -> None:
    from piano_gpt.tasks import task_special_tokens

    needed = {GENAI_TOKEN, EOGENAI_TOKEN, *task_special_tokens()}
    for task in tasks:
        needed.update(task.prefix_tokens)
    missing = sorted(t for t in needed if t not in tokenizer.token_to_id)
    if missing:
        raise EvaluationError(
            f"{checkpoint}: its tokenizer lacks the task tokens {missing[:4]}...: evaluate a checkpoint "
            "trained with task=piano_tasks (python -m piano_gpt.train --config-name=gpt2_piano ...)"
        )


# --- the benchmark ----------------------------------------------------------------------------------


def _main(metrics: dict) -> dict:
    return {name: round(float(metrics[name]), 6) for name in MAIN_METRICS}


def evaluate_samples(
    samples: dict[str, list[EvalSample]],
    model=None,
    tokenizer: MidiTokenizer | None = None,
    seed: int = 0,
    budget_factor: float = 2.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    progress: bool = False,
) -> tuple[dict, dict]:
    """(per-task results, generations) for the model (when given) and both baselines.

    ``generations[task][j]`` maps each method to its generated notes (for the pictures)."""
    methods = ([MODEL] if model is not None else []) + list(BASELINES)
    per_task, generations = {}, {}
    for task_name, items in samples.items():
        scores = {method: [] for method in methods}
        rows, gens = [], []
        nll, n_tokens, stops = 0.0, 0, Counter()
        started = time.time()
        for item in items:
            made = {}
            row = {
                "index": item.index,
                "record": item.record,
                "first_note": item.first,
                "task_seed": item.task_seed,
                "title": item.source_info.get("title"),
                "composer": item.source_info.get("composer"),
                "n_source": len(item.source),
                "n_target": len(item.target),
            }
            if model is not None:
                notes, stop, n_generated_tokens = model_generation(
                    model, tokenizer, item, budget_factor, temperature, top_k, top_p
                )
                made[MODEL] = notes
                stops[stop] += 1
                row.update(stop_reason=stop, generated_tokens=n_generated_tokens)
                loss_sum, count = target_loss(model, tokenizer, item.sample)
                nll += loss_sum
                n_tokens += count
                row["target_loss"] = loss_sum / count if count else None
            for method in BASELINES:
                made[method] = baseline_generation(method, item, seed)
            for method, notes in made.items():
                metrics = compute_all_metrics(item.target, notes)
                scores[method].append(metrics)
                row[method] = {"n_notes": len(notes), **_main(metrics)}
            rows.append(row)
            gens.append(made)
        entry = {"n_samples": len(items), "methods": {m: average_metrics(scores[m]) for m in methods}}
        if model is not None:
            entry["loss"] = {"target_token_loss": nll / n_tokens if n_tokens else None, "n_tokens": n_tokens}
            entry["stop_reasons"] = dict(stops)
        entry["seconds"] = round(time.time() - started, 3)
        entry["samples"] = rows
        per_task[task_name] = entry
        generations[task_name] = gens
        if progress:
            shown = {m: round(entry["methods"][m]["note_f1/onset/f1"], 3) for m in methods}
            print(f"{task_name}: note F1 {shown} ({entry['seconds']:.1f} s)", flush=True)
    return per_task, generations


def overall(per_task: dict) -> dict:
    """Per method: the mean over tasks of the task means (each task counts once)."""
    methods = list(next(iter(per_task.values()))["methods"])
    result = {m: average_metrics([t["methods"][m] for t in per_task.values()]) for m in methods}
    losses = [t["loss"] for t in per_task.values() if "loss" in t and t["loss"]["n_tokens"]]
    if losses:
        total = sum(entry["target_token_loss"] * entry["n_tokens"] for entry in losses)
        n_tokens = sum(entry["n_tokens"] for entry in losses)
        result["loss"] = {"target_token_loss": total / n_tokens, "n_tokens": n_tokens}
    return result


def default_out_dir(checkpoint_path, split: str) -> Path:
    return Path("tmp") / "piano_eval" / f"{Path(str(checkpoint_path)).resolve().name}-{split}"


def evaluate_checkpoint(
    checkpoint_path,
    tasks="piano_default",
    n_samples: int = 10,
    split: str = "validation",
    dataset_cfg=None,
    seed: int = 0,
    out_dir=None,
    *,
    device: str = "auto",
    notes_per_sample: int = DEFAULT_NOTES_PER_SAMPLE,
    budget_factor: float = 2.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    n_plots: int = 4,
    shards_dir: str | Path = "tmp/shards",
    progress: bool = False,
) -> dict:
    """Evaluate a checkpoint and both baselines on ``n_samples`` samples of each task; returns the
    results (see the module docstring) and writes results.json, results.md and the pictures into
    ``out_dir`` (default ``tmp/piano_eval/<checkpoint name>-<split>/``).

    ``tasks``: a task set name (``piano_default``), a task name, or a list of either;
    ``dataset_cfg``: a dataset config (dict) or its name (``demo``, ``maestro``); None: demo."""
    from piano_gpt.train.checkpoint import load_checkpoint

    task_list = as_task_list(tasks)
    device = pick_device(device)
    model, tokenizer, checkpoint_config = load_checkpoint(checkpoint_path, device=device)
    check_task_tokens(tokenizer, task_list, str(checkpoint_path))
    dataset = load_dataset_cfg(dataset_cfg)
    shards = open_split(dataset, tokenizer, split, shards_dir)
    samples = eval_samples(shards, task_list, int(n_samples), int(seed), int(notes_per_sample))
    torch.manual_seed(int(seed))
    per_task, generations = evaluate_samples(
        samples, model, tokenizer, int(seed), budget_factor, temperature, top_k, top_p, progress
    )
    results = {
        "checkpoint": str(checkpoint_path),
        "checkpoint_iter": (checkpoint_config.get("training") or {}).get("iter_num"),
        "parameter_count": checkpoint_config.get("parameter_count"),
        "dataset": dataset.get("name", dataset.get("type")),
        "split": split,
        "seed": int(seed),
        "n_samples": int(n_samples),
        "settings": {
            "notes_per_sample": int(notes_per_sample),
            "budget_factor": budget_factor,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "device": device,
            "block_size": model.config.block_size,
        },
        "main_metrics": list(MAIN_METRICS),
        "tasks": per_task,
        "overall": overall(per_task),
    }
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(checkpoint_path, split)
    write_results(results, out_dir, samples, generations, n_plots)
    results["out_dir"] = str(out_dir)
    return results


# --- outputs ----------------------------------------------------------------------------------------


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def results_markdown(results: dict) -> str:
    """The markdown report: one table per main metric (rows tasks, columns methods) and the loss."""
    tasks = results["tasks"]
    methods = list(next(iter(tasks.values()))["methods"])
    lines = [
        f"# PIANO evaluation: {results['checkpoint']}",
        "",
        f"{results['dataset']} / {results['split']}, {results['n_samples']} samples per task, seed "
        f"{results['seed']}, settings {json.dumps(results['settings'])}. Metrics compare each method's "
        "notes with the target notes (higher is better); `overall` is the mean over tasks.",
        "",
    ]
    for metric in results["main_metrics"]:
        lines += [f"## {metric}", "", "| task | " + " | ".join(methods) + " |"]
        lines.append("|---|" + "---:|" * len(methods))
        rows = [(name, entry["methods"]) for name, entry in tasks.items()]
        rows.append(("**overall**", results["overall"]))
        for name, values in rows:
            cells = [values[m][metric] for m in methods]
            best = max(cells) if max(cells) > min(cells) else None  # bold the best, unless all tie
            shown = [f"**{_fmt(c)}**" if c == best else _fmt(c) for c in cells]
            lines.append(f"| {name} | " + " | ".join(shown) + " |")
        lines.append("")
    if MODEL in methods:
        lines += ["## model: target token loss and stop reasons", ""]
        lines += ["| task | target token loss | target tokens | stop reasons |", "|---|---:|---:|---|"]
        for name, entry in tasks.items():
            loss = entry.get("loss", {})
            stops = ", ".join(f"{k} {v}" for k, v in sorted(entry.get("stop_reasons", {}).items()))
            lines.append(
                f"| {name} | {_fmt(loss.get('target_token_loss'))} | {loss.get('n_tokens')} | {stops} |"
            )
        if "loss" in results["overall"]:
            loss = results["overall"]["loss"]
            lines.append(f"| **overall** | {_fmt(loss['target_token_loss'])} | {loss['n_tokens']} | |")
        lines.append("")
    return "\n".join(lines)


def write_results(
    results: dict,
    out_dir: Path,
    samples: dict[str, list[EvalSample]] | None = None,
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
        try:
            from piano_gpt.plots import plot_comparison

            fig = plot_comparison(parts, title=title)
        except ImportError:
            fig = _plain_pianoroll(parts, title)
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


def _plain_pianoroll(parts: dict, title: str):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(parts), 1, figsize=(10, 2 * len(parts)), sharex=True, sharey=True)
    for ax, (name, notes) in zip(np.atleast_1d(axes), parts.items()):
        ax.barh(notes["pitch"], notes["end"] - notes["start"], left=notes["start"], height=0.8)
        ax.set_ylabel(name)
    fig.suptitle(title)
    return fig


__all__ = [
    "BASELINES",
    "COPY_SOURCE",
    "MAIN_METRICS",
    "METHODS",
    "MODEL",
    "RANDOM_HISTOGRAM",
    "EvalSample",
    "EvaluationError",
    "copy_source_baseline",
    "eval_samples",
    "evaluate_checkpoint",
    "evaluate_samples",
    "load_dataset_cfg",
    "model_generation",
    "open_split",
    "overall",
    "random_histogram_baseline",
    "results_markdown",
    "shards_tokenizer",
    "target_loss",
    "write_results",
]
