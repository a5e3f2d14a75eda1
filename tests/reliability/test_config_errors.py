"""Config errors: one line that says what to change, before any heavy work starts."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from piano_gpt.model import GPT, GPTConfig
from piano_gpt.train.checkpoint import save_checkpoint
from piano_gpt.train.config import CONFIG_DIR, ConfigError, command_line_problem, validate_config

REPO = Path(__file__).resolve().parents[2]


def compose_cfg(*overrides: str, config: str = "gpt2_pretraining"):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose(config, overrides=["dataset=demo", "model=gpt2_demo", *overrides])


def config_error(*overrides: str, resume_from: str | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(compose_cfg(*overrides), resume_from=resume_from)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 250, message
    return message


def test_a_good_config_passes():
    validate_config(compose_cfg("data.batch_size=2", "data.context_size=64"))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.batch_size=-2", "data.batch_size=-2: must be a positive number of sequences"),
        ("data.batch_size=0", "data.batch_size=0: must be"),
        ("data.batch_size=abc", "data.batch_size=abc: must be"),
        ("data.batch_size=2.5", "data.batch_size=2.5: must be"),
        ("data.context_size=1", "data.context_size=1: must be at least 2 tokens"),
        ("training.microbatch_size=5", "training.microbatch_size=5: must be positive and divide"),
        ("optimizer.max_iters=-1", "optimizer.max_iters=-1: must be"),
        ("optimizer.gradient_accumulation_steps=0", "optimizer.gradient_accumulation_steps=0: must be"),
        ("lr.learning_rate=0", "lr.learning_rate=0: must be a positive learning rate"),
        ("lr.learning_rate=fast", "lr.learning_rate=fast: must be"),
        ("lr.warmup_iters=-5", "lr.warmup_iters=-5: must be"),
        ("eval_interval=0", "eval_interval=0: must be"),
        ("eval_iters=-1", "eval_iters=-1: must be"),
        ("system.dtype=float8", "system.dtype=float8: use float32, bfloat16, float16 or auto"),
        ("system.device=tpu", "system.device=tpu: use auto, cpu, cuda"),
        ("task=translate", "task=translate: use next_token_prediction"),
        ("model.n_head=3", "model.n_embd=128 must be divisible by model.n_head=3"),
        ("dataset.type=csv", "dataset.type=csv: use one of demo, maestro, hf"),
        (
            "dataset.extra_datasets=[/no/such/set]",
            "dataset.extra_datasets: /no/such/set: no such file or folder",
        ),
        ("init_from=/no/such/checkpoint", "/no/such/checkpoint: no such checkpoint directory"),
    ],
)
def test_bad_values_say_what_to_change(override, expected):
    assert expected in config_error(override)


def test_a_missing_dataset_folder():
    message = config_error("dataset=maestro", "dataset.path=/no/such/maestro")
    assert message == "dataset.path=/no/such/maestro: no such folder (point it at a MAESTRO-layout folder)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_a_gpu():
    assert "no CUDA GPU is visible here; use system.device=cpu" in config_error("system.device=cuda")


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    from piano_gpt.tokenizers import ExponentialTimeTokenizer

    tokenizer = ExponentialTimeTokenizer()
    model = GPT(GPTConfig(block_size=32, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16))
    run_config = OmegaConf.to_container(compose_cfg("data.context_size=32", "run_name=small"), resolve=True)
    return save_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "small-last", model, tokenizer, run_config=run_config
    )


def test_context_longer_than_the_checkpoint_model(small_checkpoint):
    expected = (
        f"data.context_size=64 is longer than the 32 tokens the model in {small_checkpoint} was built for"
    )
    assert expected in config_error(f"init_from={small_checkpoint}", "data.context_size=64")
    assert expected in config_error(
        "task=piano_tasks", f"checkpoint_path={small_checkpoint}", "data.context_size=64"
    )
    assert expected in config_error("data.context_size=64", resume_from=str(small_checkpoint))
    validate_config(compose_cfg(f"init_from={small_checkpoint}", "data.context_size=32"))
    # checkpoint_path is only a starting point for task training: ignored (but checked to exist) otherwise.
    validate_config(compose_cfg(f"checkpoint_path={small_checkpoint}", "data.context_size=64"))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["data.bacth_size=2"], "unknown config key data.bacth_size: check its spelling"),
        (["model=gpt2_dmeo"], "Could not find 'model/gpt2_dmeo': use one of gpt2, gpt2_10M, gpt2_demo"),
        (["data.batch_size"], "Error parsing override 'data.batch_size': missing EQUAL"),
        (["--config-name=nope"], "Cannot find primary config 'nope'"),
        (["--config-name=resume_training", "checkpoint_path=/x", "optimizer.max_iters=9"], None),
        (["data.batch_size=-2"], None),  # a value: validate_config's job
    ],
)
def test_command_line_problems_in_one_line(argv, expected):
    problem = command_line_problem(argv)
    if expected is None:
        assert problem is None
    else:
        assert expected in problem and "\n" not in problem, problem


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The training command, from an empty folder: heavy work would leave tmp/shards there."""
    return subprocess.run(
        [sys.executable, "-m", "piano_gpt.train", *args, f"out_dir={tmp_path / 'runs'}", "run_name=r"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(run: subprocess.CompletedProcess, expected: str, tmp_path: Path) -> None:
    assert run.returncode == 2, run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert (
        not (tmp_path / "tmp").exists() and not (tmp_path / "runs").exists()
    )  # nothing built, nothing written


def test_cli_bad_value_fails_fast_in_one_line(tmp_path):
    started = time.monotonic()
    run = run_cli(tmp_path, "dataset=demo", "model=gpt2_demo", "data.batch_size=-2")
    assert_one_line_error(run, "data.batch_size=-2: must be a positive number of sequences", tmp_path)
    assert time.monotonic() - started < 60


def test_cli_context_longer_than_the_checkpoint_model(tmp_path, small_checkpoint):
    run = run_cli(
        tmp_path, "dataset=demo", "model=gpt2_demo", f"init_from={small_checkpoint}", "data.context_size=64"
    )
    assert_one_line_error(run, "data.context_size=64 is longer than the 32 tokens", tmp_path)


def test_cli_unknown_key_in_one_line(tmp_path):
    run = run_cli(tmp_path, "dataset=demo", "data.bacth_size=2")
    assert_one_line_error(run, "unknown config key data.bacth_size", tmp_path)


def test_cli_resume_with_a_longer_context(tmp_path, small_checkpoint):
    run = run_cli(
        tmp_path,
        "--config-name=resume_training",
        f"checkpoint_path={small_checkpoint}",
        "data.context_size=64",
    )
    assert (
        run.returncode == 2
        and "data.context_size=64 is longer than the 32 tokens" in run.stderr.splitlines()[-1]
    )


@pytest.mark.parametrize("given", [[], ["checkpoint_path=null"]])
def test_cli_resume_without_a_checkpoint_in_one_line(tmp_path, given):
    run = run_cli(tmp_path, "--config-name=resume_training", *given)
    assert_one_line_error(
        run, "--config-name=resume_training needs the checkpoint to resume: checkpoint_path=DIR", tmp_path
    )
