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
of the task means. ``results.md`` and the pictures: ``piano_gpt.evaluation.report``.

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
from piano_gpt.configs import dataset_config
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
from piano_gpt.evaluation.report import write_results
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
    dataset_cfg: dict, tokenizer: MidiTokenizer, split: str, cache_dir: str | Path = "tmp/shards"
) -> SplitShards:
    """The shards of one split of a dataset (built on first use, then reused)."""
    if split not in ("train", "validation", "test"):
        raise EvaluationError(f"split={split}: use validation, test or train")
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
    ``dataset_cfg``: a dataset config (dict), or for compatibility its name (``demo``, ``maestro``:
    ``piano_gpt.configs.dataset_config``); None: demo."""
    from piano_gpt.train.checkpoint import load_checkpoint

    task_list = as_task_list(tasks)
    device = pick_device(device)
    model, tokenizer, checkpoint_config = load_checkpoint(checkpoint_path, device=device)
    check_task_tokens(tokenizer, task_list, str(checkpoint_path))
    if dataset_cfg is None or isinstance(dataset_cfg, str):
        try:
            dataset = dataset_config(dataset_cfg or "demo")
        except ValueError as error:
            raise EvaluationError(str(error)) from error
    else:
        dataset = dict(dataset_cfg)
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
    "model_generation",
    "open_split",
    "overall",
    "random_histogram_baseline",
    "shards_tokenizer",
    "target_loss",
]
