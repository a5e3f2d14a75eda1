"""The PIANO benchmark (piano_eval), its baselines, and the loss evaluation (eval)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from piano_gpt.data.datasets import make_example
from piano_gpt.data.shards import build_shards, build_split
from piano_gpt.data.sources import RecordItem
from piano_gpt.evaluation.baselines import copy_source_baseline, random_histogram_baseline
from piano_gpt.evaluation.loss import evaluate_loss, record_windows
from piano_gpt.evaluation.metrics import note_f1
from piano_gpt.evaluation.piano_eval import (
    MAIN_METRICS,
    EvaluationError,
    eval_samples,
    evaluate_checkpoint,
    shards_tokenizer,
)
from piano_gpt.midi import make_notes
from piano_gpt.model import GPT, GPTConfig
from piano_gpt.tasks import add_task_tokens, get_task
from piano_gpt.tokenizers import ExponentialTimeTokenizer
from piano_gpt.train.checkpoint import save_checkpoint

DEMO = {"name": "demo", "type": "demo", "extra_datasets": []}
TASKS = ["above_median_prediction", "top_line_masking-x1"]


def tiny_checkpoint(path, seed=0, with_tasks=True):
    tokenizer = ExponentialTimeTokenizer()
    if with_tasks:
        add_task_tokens(tokenizer)
    torch.manual_seed(seed)
    config = GPTConfig(block_size=192, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=32)
    return save_checkpoint(path, GPT(config), tokenizer, run_config={"data": {"notes_per_record": 16}})


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    build_shards(DEMO, ExponentialTimeTokenizer(), root, splits=("validation",))
    return root


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return tiny_checkpoint(root / "tiny-a", seed=0), tiny_checkpoint(root / "tiny-b", seed=1)


def run_eval(checkpoint, shards_dir, out_dir, **options):
    settings = dict(notes_per_sample=16, n_plots=1, shards_dir=shards_dir, temperature=1.0)
    settings.update(options)
    return evaluate_checkpoint(
        checkpoint, TASKS, 2, "validation", "demo", seed=0, out_dir=out_dir, **settings
    )


def test_piano_eval_writes_results_with_both_baselines(checkpoints, shards_dir, tmp_path):
    results = run_eval(checkpoints[0], shards_dir, tmp_path / "a")
    out = tmp_path / "a"
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["tasks"]) == set(TASKS)
    for entry in saved["tasks"].values():
        assert entry["n_samples"] == 2 and len(entry["samples"]) == 2
        assert set(entry["methods"]) == {"model", "copy_source", "random_histogram"}
        for values in entry["methods"].values():
            assert all(math.isfinite(v) for v in values.values())
        assert math.isfinite(entry["loss"]["target_token_loss"]) and entry["loss"]["n_tokens"] > 0
        assert sum(entry["stop_reasons"].values()) == 2
    for method in ("model", "copy_source", "random_histogram"):
        for metric in MAIN_METRICS:
            assert math.isfinite(saved["overall"][method][metric])
    markdown = (out / "results.md").read_text()
    for text in ("copy_source", "random_histogram", "model", *TASKS, "note_f1/onset/f1", "**overall**"):
        assert text in markdown
    assert (out / "metrics.png").stat().st_size > 0
    assert len(list(out.glob("pianoroll-*.png"))) == 1
    assert results["overall"]["model"]["note_f1/onset/f1"] == saved["overall"]["model"]["note_f1/onset/f1"]


def test_every_model_and_baseline_sees_the_same_samples(checkpoints, shards_dir, tmp_path):
    first = run_eval(checkpoints[0], shards_dir, tmp_path / "a", n_plots=0)
    second = run_eval(checkpoints[1], shards_dir, tmp_path / "b", n_plots=0)
    for task in TASKS:
        rows_a, rows_b = first["tasks"][task]["samples"], second["tasks"][task]["samples"]
        for a, b in zip(rows_a, rows_b):
            for key in (
                "record",
                "first_note",
                "task_seed",
                "n_source",
                "n_target",
                "copy_source",
                "random_histogram",
            ):
                assert a[key] == b[key]
        assert (
            first["tasks"][task]["methods"]["copy_source"] == second["tasks"][task]["methods"]["copy_source"]
        )
    other_seed = evaluate_checkpoint(
        checkpoints[0], TASKS, 2, "validation", "demo", seed=1, out_dir=tmp_path / "c", notes_per_sample=16,
        n_plots=0, shards_dir=shards_dir,
    )  # fmt: skip
    assert [r["record"] for r in other_seed["tasks"][TASKS[0]]["samples"]] != [
        r["record"] for r in first["tasks"][TASKS[0]]["samples"]
    ] or [r["first_note"] for r in other_seed["tasks"][TASKS[0]]["samples"]] != [
        r["first_note"] for r in first["tasks"][TASKS[0]]["samples"]
    ]


def test_copy_source_on_a_masking_task_predicts_the_rest_of_the_piece(shards_dir):
    """Source and target of a selection task are disjoint sets of one window's notes. So copying the
    source, scored against the whole window, has precision 1 and recall |source| / |window| < 1; scored
    against the target it can only match a target note by repeating its pitch within 50 ms, which
    these windows never do: note F1 0."""
    shards = build_shards(DEMO, ExponentialTimeTokenizer(), shards_dir, splits=("validation",))["validation"]
    task = get_task("top_line_masking-x1")
    for item in eval_samples(shards, [task], 4, seed=0, notes_per_sample=32)[task.name]:
        copy = copy_source_baseline(item.source, len(item.target), np.random.default_rng(0))
        assert 0 < len(item.target) < len(item.notes)
        whole = note_f1(item.notes, copy)
        assert whole["onset/precision"] == 1.0
        assert whole["onset/recall"] == pytest.approx(len(item.source) / len(item.notes))
        against_target = note_f1(item.target, copy)
        assert against_target["onset/recall"] < 1.0
        assert against_target["onset/f1"] == 0.0


def test_random_histogram_baseline_draws_from_the_source():
    source = make_notes([40, 41, 42, 43], [50, 60, 70, 80], [1.0, 2.0, 3.0, 4.0], [1.5, 2.1, 3.2, 4.4])
    notes = random_histogram_baseline(source, 50, np.random.default_rng(5))
    assert len(notes) == 50
    assert set(notes["pitch"]) <= {40, 41, 42, 43} and set(notes["velocity"]) <= {50, 60, 70, 80}
    assert notes["start"].between(1.0, 4.0).all()
    assert set(np.round(notes["end"] - notes["start"], 6)) <= {0.5, 0.1, 0.2, 0.4}
    again = random_histogram_baseline(source, 50, np.random.default_rng(5))
    assert notes.equals(again)
    # On a pitch split its pitches all lie below the median, the target's at or above: note F1 is 0.
    target = make_notes([60, 62], [70, 70], [1.0, 2.0], [1.5, 2.5])
    assert note_f1(target, notes)["onset/f1"] == 0.0


def test_piano_eval_refuses_a_checkpoint_without_task_tokens(shards_dir, tmp_path):
    path = tiny_checkpoint(tmp_path / "plain", with_tasks=False)
    with pytest.raises(EvaluationError, match="task tokens"):
        run_eval(path, shards_dir, tmp_path / "out")
    with pytest.raises(EvaluationError, match="unknown task"):
        evaluate_checkpoint(path, "no_such_task", 1, "validation", "demo", shards_dir=shards_dir)


def uniform_model(vocab_size, block_size=16):
    """A model whose logits are all 0 (the tied embedding / output matrix is zero): loss ln(V) per token."""
    model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():
        model.lm_head.weight.zero_()
    return model.eval()


def small_split(tmp_path, tokenizer):
    records = []
    for n, offset in ((10, 0.0), (23, 0.5)):
        start = offset + np.arange(n) * 0.3
        records.append(
            {
                "notes": {
                    "pitch": list(60 + np.arange(n) % 12),
                    "velocity": [64] * n,
                    "start": list(start),
                    "end": list(start + 0.2),
                    "duration": [0.2] * n,
                },
                "source": json.dumps({"title": f"piece {n}"}),
            }
        )
    return build_split([RecordItem(r) for r in records], tokenizer, tmp_path / "split")


def test_bits_per_note_by_hand(tmp_path):
    tokenizer = ExponentialTimeTokenizer()
    split = small_split(tmp_path, tokenizer)
    counts = split.index["token_count"].tolist()
    notes = split.index["note_count"].tolist()
    assert notes == [10, 23]
    figures = evaluate_loss(
        uniform_model(tokenizer.vocab_size), tokenizer, split, context_size=16, batch_size=3
    )
    # Each token but a record's first is predicted once, each at ln(V) nats.
    n_tokens = sum(c - 1 for c in counts)
    assert figures["n_tokens"] == n_tokens
    assert figures["loss"] == pytest.approx(math.log(tokenizer.vocab_size), rel=1e-6)
    assert figures["bits_per_note"] == pytest.approx(
        math.log2(tokenizer.vocab_size) * n_tokens / 33, rel=1e-6
    )
    assert figures["bits_per_note"] == pytest.approx(
        figures["loss"] * figures["n_tokens"] / figures["n_notes"] / math.log(2), rel=1e-9
    )
    seconds = float(split.index["duration"].sum())
    assert figures["bits_per_second"] == pytest.approx(math.log2(tokenizer.vocab_size) * n_tokens / seconds)
    assert figures["n_windows"] == sum(len(record_windows(c, 16)) for c in counts)


def test_record_windows_predict_every_token_once():
    for n_tokens in (1, 2, 5, 16, 17, 18, 100):
        windows = record_windows(n_tokens, 16)
        predicted = [t for start, stop in windows for t in range(start + 1, stop)]
        assert predicted == list(range(1, n_tokens))
        assert all(stop - start <= 17 for start, stop in windows)


def test_loss_of_a_record_that_fits_one_window_is_the_models_own(tmp_path):
    tokenizer = ExponentialTimeTokenizer()
    split = small_split(tmp_path, tokenizer)
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(block_size=128, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16)
    ).eval()
    tokens = np.asarray(split.record_tokens(0), dtype=np.int64)
    assert len(tokens) <= 129
    example = make_example(tokens, 128, tokenizer, model.config.max_music_time)
    with torch.no_grad():
        _, loss = model(example["input_ids"][None], example["time_steps"][None], example["targets"][None])
    figures = evaluate_loss(model, tokenizer, split, context_size=128, max_records=1)
    assert figures["n_records"] == 1 and figures["n_tokens"] == len(tokens) - 1
    assert figures["loss"] == pytest.approx(float(loss), rel=1e-5)


def test_shards_tokenizer_finds_the_training_shards():
    tokenizer = ExponentialTimeTokenizer()
    add_task_tokens(tokenizer)
    assert shards_tokenizer(tokenizer).to_dict() == ExponentialTimeTokenizer().to_dict()


def test_command_lines(checkpoints, shards_dir, tmp_path):
    """``python -m piano_gpt.piano_eval init_from=...`` with one task by name, and ``python -m piano_gpt.eval``."""
    out = tmp_path / "cli"
    command = [
        sys.executable, "-m", "piano_gpt.piano_eval", f"init_from={checkpoints[0]}", "tasks=top_line_masking-x2",
        "n_samples=1", "n_plots=0", f"shards_dir={shards_dir}", f"out_dir={out}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    saved = json.loads((out / "results.json").read_text())
    assert list(saved["tasks"]) == ["top_line_masking-x2"]
    assert saved["settings"]["notes_per_sample"] < 128  # null in the config: fitted to the model
    assert "fitted to the model" in done.stdout
    command = [
        sys.executable, "-m", "piano_gpt.eval", f"init_from={checkpoints[0]}", "max_records=2",
        f"shards_dir={shards_dir}", f"out_path={tmp_path / 'loss.json'}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    figures = json.loads((tmp_path / "loss.json").read_text())
    assert figures["n_records"] == 2 and figures["bits_per_note"] > 0
    missing = subprocess.run(
        [sys.executable, "-m", "piano_gpt.piano_eval", f"shards_dir={shards_dir}"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "checkpoint_path=DIR" in missing.stderr


def test_piano_eval_fits_the_window_to_a_small_context_or_refuses(checkpoints, shards_dir, tmp_path):
    """Issue 15.3: a 192-token model at the old default of 128 notes per window ended every sample
    prompt_too_long and printed F1 0 without a word. By default the window now fits the model; a value
    that cannot fit is refused, naming what to set."""
    results = evaluate_checkpoint(
        checkpoints[0], TASKS, 2, "validation", "demo", seed=0, out_dir=tmp_path / "fit", n_plots=0,
        shards_dir=shards_dir,
    )  # fmt: skip
    notes = results["settings"]["notes_per_sample"]
    assert 8 <= notes < 128
    for entry in results["tasks"].values():
        assert "prompt_too_long" not in entry["stop_reasons"]
        assert all(row["n_source"] + row["n_target"] <= notes for row in entry["samples"])
    with pytest.raises(EvaluationError, match=r"notes_per_sample=128: .* set notes_per_sample<=\d+"):
        run_eval(checkpoints[0], shards_dir, tmp_path / "refused", notes_per_sample=128)
