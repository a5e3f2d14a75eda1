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
5. ``compute_all_metrics(target, generation)`` for each method, by the scorer that also scores any
   system's predictions for an exported set (``piano_gpt.evaluation.scoring``; ``piano-gpt benchmark``).

``notes_per_sample`` None (the default) fits the window to the model: the largest window, at most
128 notes, whose task sequence fits the model's context at the split's tokens per note; a value that
cannot fit is refused with the value to set (a prompt longer than the context scores F1 0).

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
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

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
from piano_gpt.evaluation.report import write_results
from piano_gpt.evaluation.scoring import (
    MAIN_METRICS,
    baseline_predictions,
    overall,
    sample_id,
    score_predictions,
    task_rng,
)
from piano_gpt.midi import empty_notes
from piano_gpt.tasks import Task, TaskSample, build_task_prompt, build_task_sequence, resolve_tasks
from piano_gpt.tokenizers import EOGENAI_TOKEN, GENAI_TOKEN, MidiTokenizer, tokenizer_from_dict

MODEL = "model"
METHODS = (MODEL, COPY_SOURCE, RANDOM_HISTOGRAM)
DEFAULT_NOTES_PER_SAMPLE = 128  # data.notes_per_record of gpt2_piano; the most a fitted window takes
MIN_NOTES_PER_SAMPLE = 8  # a model whose context holds fewer notes than this cannot do the tasks
# <N_NOTES_k>, up to two task tokens, two music-time tokens, <GENAI>, <EOGENAI>, one spare
TASK_OVERHEAD_TOKENS = 8
FIT_MARGIN = 0.9  # windows denser than the split's average must fit too
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
    """One benchmark sample: a window of a record split by a task (the scorer's sample interface:
    ``piano_gpt.evaluation.scoring``)."""

    task: Task
    index: int
    record: int
    first: int
    notes: pd.DataFrame
    sample: TaskSample
    task_seed: int
    source_info: dict
    seed: int = 0

    @property
    def source(self) -> pd.DataFrame:
        return self.sample.source

    @property
    def target(self) -> pd.DataFrame:
        return self.sample.target

    @property
    def task_name(self) -> str:
        return self.task.name

    @property
    def sample_id(self) -> str:
        return sample_id(self.task.name, self.index)

    @property
    def window_end(self) -> float:
        return float(self.notes["end"].max()) if len(self.notes) else 0.0

    @property
    def info(self) -> dict:
        return {
            "record": self.record,
            "first_note": self.first,
            "task_seed": self.task_seed,
            "title": self.source_info.get("title"),
            "composer": self.source_info.get("composer"),
        }


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
            samples.append(EvalSample(task, j, record, first, notes, sample, task_seed, info, int(seed)))
        out[task.name] = samples
    return out


def fit_notes_per_sample(requested: int | None, block_size: int, tokens_per_note: float) -> int:
    """The window size for a model: ``requested``, or (None) the largest window up to
    ``DEFAULT_NOTES_PER_SAMPLE`` whose whole task sequence (prompt and target) fits the model's context
    at the split's token density. A window that cannot fit raises EvaluationError naming what to set:
    a too-long prompt would otherwise score an empty generation (F1 0) without a word."""
    fits = int(FIT_MARGIN * (block_size - TASK_OVERHEAD_TOKENS) / max(tokens_per_note, 1e-9))
    if requested is None:
        if fits < MIN_NOTES_PER_SAMPLE:
            raise EvaluationError(
                f"the model's context ({block_size} tokens) holds about {fits} notes of this data at "
                f"{tokens_per_note:.1f} tokens per note: too few for the PIANO tasks"
            )
        return min(DEFAULT_NOTES_PER_SAMPLE, fits)
    if int(requested) > fits:
        raise EvaluationError(
            f"notes_per_sample={requested}: a window of that many notes takes about "
            f"{int(requested) * tokens_per_note + TASK_OVERHEAD_TOKENS:.0f} tokens and the model's context "
            f"is {block_size}; set notes_per_sample<={fits} (or leave it null to fit the model)"
        )
    return int(requested)


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
    item,
    budget_factor: float = 2.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
) -> tuple[pd.DataFrame, str, int]:
    """(generated target notes, stop reason, generated tokens) of the model on one sample.

    ``item``: an ``EvalSample`` or a benchmark set's sample: ``sample`` (the TaskSample the prompt is
    built from: its source, and its target's number of notes and time span), ``window_end``,
    ``task_seed`` and ``source``."""
    from piano_gpt.generation import GenerationConfig, complete_samples

    prompt = build_task_prompt(tokenizer, item.sample)
    room = model.config.block_size - len(prompt)
    if room < 1:
        return empty_notes(), STOP_PROMPT_TOO_LONG, 0
    config = GenerationConfig(
        n_samples=1,
        seed=item.task_seed,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=room,
        max_notes=max(MIN_BUDGET_NOTES, math.ceil(budget_factor * len(item.sample.target))),
        max_duration=budget_factor * item.window_end + 1.0,
    )
    generation = complete_samples(model, tokenizer, prompt, config, context=item.source)[0]
    return generation.notes, generation.stop_reason, generation.n_tokens


def warn_prompts_too_long(stops: Counter, n_samples: int, block_size: int) -> None:
    if stops.get(STOP_PROMPT_TOO_LONG):
        print(
            f"warning: {stops[STOP_PROMPT_TOO_LONG]} of {n_samples} prompts are longer than the model's "
            f"context ({block_size} tokens): those score as empty generations; use fewer notes per sample",
            file=sys.stderr,
        )


def check_prompts_fit(tokenizer: MidiTokenizer, items: list, block_size: int) -> None:
    """Refuse samples (a frozen set's, whose window cannot be refitted) when more than a quarter of their
    prompts are longer than the model's context: they would score as empty generations."""
    lengths = [len(build_task_prompt(tokenizer, item.sample)) for item in items]
    too_long = sum(length > block_size for length in lengths)
    if too_long * 4 > len(items):
        tokens_per_note = sum(lengths) / max(sum(len(item.source) for item in items), 1)
        fits = int(FIT_MARGIN * (block_size - TASK_OVERHEAD_TOKENS) / tokens_per_note)
        raise EvaluationError(
            f"{too_long} of {len(items)} prompts are longer than the model's context ({block_size} tokens): "
            f"use a set of shorter windows (piano-gpt benchmark export --notes-per-sample {fits})"
        )


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


def evaluate_samples(
    samples: dict[str, list[EvalSample]],
    model=None,
    tokenizer: MidiTokenizer | None = None,
    budget_factor: float = 2.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    progress: bool = False,
) -> tuple[dict, dict]:
    """(per-task results, generations) for the model (when given) and both baselines: the model's
    predictions, then ``piano_gpt.evaluation.scoring`` (the scorer of ``piano-gpt benchmark score``).

    ``generations[task][j]`` maps each method to its generated notes (for the pictures)."""
    items = [item for task_items in samples.values() for item in task_items]
    predictions, extra_rows, model_entries = {}, {}, {}
    if model is not None:
        made = {}
        for task_name, task_items in samples.items():
            started = time.time()
            nll, n_tokens, stops = 0.0, 0, Counter()
            for item in task_items:
                notes, stop, n_generated_tokens = model_generation(
                    model, tokenizer, item, budget_factor, temperature, top_k, top_p
                )
                made[item.sample_id] = notes
                stops[stop] += 1
                loss_sum, count = target_loss(model, tokenizer, item.sample)
                nll += loss_sum
                n_tokens += count
                extra_rows[item.sample_id] = {
                    "stop_reason": stop,
                    "generated_tokens": n_generated_tokens,
                    "target_loss": loss_sum / count if count else None,
                }
            model_entries[task_name] = {
                "loss": {"target_token_loss": nll / n_tokens if n_tokens else None, "n_tokens": n_tokens},
                "stop_reasons": dict(stops),
                "seconds": time.time() - started,
            }
        predictions[MODEL] = made
        stops = sum((Counter(entry["stop_reasons"]) for entry in model_entries.values()), Counter())
        warn_prompts_too_long(stops, len(items), model.config.block_size)
    predictions.update(baseline_predictions(items))
    per_task = score_predictions(items, predictions, extra_rows)
    for task_name, entry in per_task.items():
        if task_name in model_entries:
            model_entry = model_entries[task_name]
            entry["loss"], entry["stop_reasons"] = model_entry["loss"], model_entry["stop_reasons"]
            entry["seconds"] = round(entry["seconds"] + model_entry["seconds"], 3)
        entry["samples"] = entry.pop("samples")  # last, as before
        if progress:
            shown = {m: round(v["note_f1/onset/f1"], 3) for m, v in entry["methods"].items()}
            print(f"{task_name}: note F1 {shown} ({entry['seconds']:.1f} s)", flush=True)
    generations = {
        task_name: [
            {method: predictions[method][item.sample_id] for method in predictions} for item in task_items
        ]
        for task_name, task_items in samples.items()
    }
    return per_task, generations


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
    notes_per_sample: int | None = None,
    budget_factor: float = 2.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    n_plots: int = 4,
    shards_dir: str | Path = "tmp/shards",
    progress: bool = False,
    set_dir: str | Path | None = None,
) -> dict:
    """Evaluate a checkpoint and both baselines on ``n_samples`` samples of each task; returns the
    results (see the module docstring) and writes results.json, results.md and the pictures into
    ``out_dir`` (default ``tmp/piano_eval/<checkpoint name>-<split>/``).

    ``tasks``: a task set name (``piano_default``), a task name, or a list of either;
    ``dataset_cfg``: a dataset config (dict), or for compatibility its name (``demo``, ``maestro``:
    ``piano_gpt.configs.dataset_config``); None: demo. ``notes_per_sample``: None fits the window to
    the model's context (:func:`fit_notes_per_sample`; a value that cannot fit raises).
    ``set_dir``: a benchmark set (``piano-gpt benchmark export``) whose samples, tasks, split, seed and
    window are used instead of drawing them (``tasks``, ``n_samples``, ``split``, ``dataset_cfg``,
    ``seed`` and ``notes_per_sample`` are then not used)."""
    from piano_gpt.train.checkpoint import load_checkpoint

    frozen = None
    if set_dir is not None:
        from piano_gpt.evaluation.benchmark import set_samples_by_task  # (benchmark imports this module)

        frozen, samples = set_samples_by_task(set_dir)
        tasks, split, seed, n_samples = (
            frozen["tasks"],
            frozen["split"],
            frozen["seed"],
            frozen["n_samples_per_task"],
        )
        dataset = {"name": f"set {frozen['source']} ({frozen['content_hash'][:16]})"}
    task_list = as_task_list(tasks)
    device = pick_device(device)
    model, tokenizer, checkpoint_config = load_checkpoint(checkpoint_path, device=device)
    check_task_tokens(tokenizer, task_list, str(checkpoint_path))
    block_size = model.config.block_size
    if frozen is not None:
        notes_per_sample = frozen["notes_per_sample"]
        check_prompts_fit(tokenizer, [item for items in samples.values() for item in items], block_size)
    else:
        if dataset_cfg is None or isinstance(dataset_cfg, str):
            try:
                dataset = dataset_config(dataset_cfg or "demo")
            except ValueError as error:
                raise EvaluationError(str(error)) from error
        else:
            dataset = dict(dataset_cfg)
        shards = open_split(dataset, tokenizer, split, shards_dir)
        tokens_per_note = shards.n_tokens / max(shards.n_notes, 1)
        fitted = fit_notes_per_sample(notes_per_sample, block_size, tokens_per_note)
        if progress and notes_per_sample is None:
            print(f"notes_per_sample={fitted}: fitted to the model's {block_size}-token context", flush=True)
        notes_per_sample = fitted
        samples = eval_samples(shards, task_list, int(n_samples), int(seed), notes_per_sample)
    torch.manual_seed(int(seed))
    per_task, generations = evaluate_samples(
        samples, model, tokenizer, budget_factor, temperature, top_k, top_p, progress
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
    if frozen is not None:
        results["set"] = {"path": str(set_dir), "content_hash": frozen["content_hash"]}
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
    "fit_notes_per_sample",
    "evaluate_samples",
    "model_generation",
    "open_split",
    "overall",
    "random_histogram_baseline",
    "shards_tokenizer",
    "target_loss",
    "task_rng",
]
