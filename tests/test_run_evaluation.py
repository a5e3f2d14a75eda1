"""scripts/run_evaluation.py: several checkpoints, the same PIANO samples, one comparison table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from piano_gpt.model import GPT, GPTConfig
from piano_gpt.tasks.sequence import add_task_tokens
from piano_gpt.tokenizers import ExponentialTimeTokenizer
from piano_gpt.train.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
TASK = "above_median_prediction"


def load_script():
    spec = importlib.util.spec_from_file_location(
        "run_evaluation_script", REPO / "scripts" / "run_evaluation.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return load_script()


def tiny_checkpoint(path: Path, seed: int, block_size: int = 128) -> Path:
    torch.manual_seed(seed)
    tok = ExponentialTimeTokenizer()
    add_task_tokens(tok)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32))
    return save_checkpoint(path, model, tok, training={"iter_num": seed, "tokens_seen": 100 * seed})


def test_positional_arguments_paths_then_device():
    module = load_script()
    assert module.split_positional(["a,b", "cpu"]) == (["a", "b"], "cpu")
    assert module.split_positional(["a", "b,c", "cuda:1"]) == (["a", "b", "c"], "cuda:1")
    for bad in (["a"], ["a", "b"], [",", "cpu"]):
        with pytest.raises(module.UsageError):
            module.split_positional(bad)
    assert module.task_names(["x,y", "z"]) == ["x", "y", "z"]
    assert module.model_labels(["runs/a/m-best", "runs/b/m-best", "runs/c/n"]) == [
        "a/m-best",
        "b/m-best",
        "n",
    ]
    assert module.model_labels(["x/m", "x/m"]) == ["m#1", "m#2"]


def test_two_checkpoints_one_comparison(script, tmp_path, capsys):
    a = tiny_checkpoint(tmp_path / "runs" / "a" / "a-best", seed=1)
    b = tiny_checkpoint(tmp_path / "runs" / "b" / "b-best", seed=2)
    out = tmp_path / "compare"
    # a is given as its run folder: its -best is taken
    argv = [f"{a.parent},{b}", "cpu", "--tasks", TASK, "--n-samples", "2", "--out-dir", str(out)]
    argv += ["--shards-dir", str(tmp_path / "shards"), "--n-plots", "0", "--notes-per-sample", "16"]
    assert script.main(argv) == 0

    table = (out / "comparison.md").read_text()
    assert "a-best" in table and "b-best" in table and TASK in table
    assert "copy_source (baseline)" in table and "random_histogram (baseline)" in table
    comparison = json.loads((out / "comparison.json").read_text())
    assert list(comparison["models"]) == ["a-best", "b-best"]
    assert comparison["tasks"] == [TASK] and comparison["split"] == "validation" and comparison["seed"] == 0
    assert comparison["same_samples"] is True  # equal baseline scores: both models saw the same samples
    for label, path in (("a-best", a), ("b-best", b)):
        model = comparison["models"][label]
        assert model["checkpoint"] == str(path)
        assert set(model["tasks"][TASK]) == set(comparison["main_metrics"]) == set(model["overall"])
        assert model["target_token_loss"]["overall"] > 0  # the model was run, its prompts fit the context
        assert (out / label / "results.json").exists()  # each model's own full results
    # different weights, different target losses: each column is its own model
    losses = [m["target_token_loss"]["overall"] for m in comparison["models"].values()]
    assert losses[0] != losses[1]
    assert (out / "comparison.png").stat().st_size > 0
    assert "comparison.md" in capsys.readouterr().out


def test_usage_errors(script, tmp_path, capsys):
    a = tiny_checkpoint(tmp_path / "a-best", seed=1)
    with pytest.raises(SystemExit) as exit_info:
        script.main([str(a), str(tmp_path / "missing"), "cpu", "--tasks", TASK])  # checked before any work
    assert exit_info.value.code == 2
    assert "no such checkpoint directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main([str(a), "--tasks", TASK])  # no device
    assert "device" in capsys.readouterr().err
    # a checkpoint without the task tokens: a clear error, exit status 1
    torch.manual_seed(0)
    tok = ExponentialTimeTokenizer()
    plain = save_checkpoint(
        tmp_path / "plain",
        GPT(GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16)),
        tok,
    )
    argv = [str(plain), "cpu", "--tasks", TASK, "--n-samples", "1", "--out-dir", str(tmp_path / "o")]
    assert script.main(argv + ["--shards-dir", str(tmp_path / "shards")]) == 1
    assert "task tokens" in capsys.readouterr().err


def test_models_of_different_contexts_get_one_fitted_window(script, tmp_path):
    """Without --notes-per-sample the window is fitted to the first model's context and kept for the
    others, so both see the same samples (fitted per model they would not)."""
    a = tiny_checkpoint(tmp_path / "a-best", seed=1, block_size=96)
    b = tiny_checkpoint(tmp_path / "b-best", seed=2, block_size=192)
    out = tmp_path / "compare"
    argv = [f"{a},{b}", "cpu", "--tasks", TASK, "--n-samples", "1", "--out-dir", str(out)]
    assert script.main([*argv, "--shards-dir", str(tmp_path / "shards"), "--n-plots", "0"]) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["same_samples"] is True
    results = [json.loads((out / m / "results.json").read_text()) for m in ("a-best", "b-best")]
    windows = {r["settings"]["notes_per_sample"] for r in results}
    assert len(windows) == 1 and windows.pop() < 128
