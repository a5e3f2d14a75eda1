"""Inputs nobody checked: every training key, every generation option and the store's texts are
checked (type and range, by rule tables) before any work, and refused in one line; the sampler never
returns a masked id, whatever the logits."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from test_config_errors import assert_one_line_error, config_error, run_cli

from piano_gpt.commands.base import CommandError, sampling_options
from piano_gpt.commands.generate import check_options
from piano_gpt.generation import GenerationError
from piano_gpt.generation.sampling import Sampler, SamplingConfig
from piano_gpt.midi import make_notes
from piano_gpt.train.config import CONFIG_DIR

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.weight_decay=abc", "optimizer.weight_decay=abc: must be a weight decay"),
        ("optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1: must be"),
        ("optimizer.grad_clip=abc", "optimizer.grad_clip=abc: must be a gradient norm"),
        ("optimizer.beta2=1.5", "optimizer.beta2=1.5: must be an Adam beta"),
        ("seed=abc", "seed=abc: must be a random seed"),
        ("seed=-1", "seed=-1: must be"),
        ("model.n_embd=0", "model.n_embd=0: must be the embedding width"),
        ("model.dropout=abc", "model.dropout=abc: must be a probability"),
        ("model.n_layer=-1", "model.n_layer=-1: must be the number of blocks"),
        ("model.n_layer=0", "model.n_layer=0: must be"),
        ("model.n_head=abc", "model.n_head=abc: must be"),
        ("tokenizer.time_unit=0", "tokenizer.time_unit=0: must be seconds per time unit"),
        ("tokenizer.time_unit=abc", "tokenizer.time_unit=abc: must be"),
        ("tokenizer.n_velocity_bins=0", "tokenizer.n_velocity_bins=0: must be"),
        ("data.context_size=100000", "data.context_size=100000: must be at least 2 tokens (an integer >= 2"),
        ("lr.min_lr=nan", "lr.min_lr=nan: must be"),
        ("lr.learning_rate=inf", "lr.learning_rate=inf: must be"),
        ("lr.decay_lr=maybe", "lr.decay_lr=maybe: must be true or false"),
        ("max_train_minutes=-5", "max_train_minutes=-5: must be"),
        ("system.compile=yes", "system.compile=yes: must be true or false"),
    ],
)
def test_every_training_key_is_checked(override, expected):
    assert expected in config_error(override)


def test_the_awesome_tokenizer_base_is_checked():
    assert "tokenizer.base.time_unit=0: must be" in config_error(
        "tokenizer=awesome", "tokenizer.base.time_unit=0"
    )


def test_cli_weight_decay_is_refused_before_shards_or_run_folder(tmp_path):
    run = run_cli(tmp_path, "dataset=demo", "model=gpt2_demo", "optimizer.weight_decay=abc")
    assert_one_line_error(run, "optimizer.weight_decay=abc: must be a weight decay", tmp_path)


def generate_cfg(*overrides: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose("generate", overrides=["checkpoint_path=/no/such/checkpoint", *overrides])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("temperature=nan", "temperature=nan: must be a temperature"),
        ("temperature=inf", "temperature=inf: must be"),
        ("temperature=-1", "temperature=-1: must be"),
        ("temperature=hot", "temperature=hot: must be"),
        ("top_p=0", "top_p=0: must be a probability mass"),
        ("top_k=abc", "top_k=abc: must be"),
        ("min_p=nan", "min_p=nan: must be"),
        ("seed=abc", "seed=abc: must be a random seed"),
        ("n_samples=0", "n_samples=0: must be"),
        ("max_new_tokens=abc", "max_new_tokens=abc: must be"),
        ("duration=nan", "duration=nan: must be"),
        ("fast=maybe", "fast=maybe: must be true or false"),
    ],
)
def test_generation_options_are_checked(override, expected):
    with pytest.raises((GenerationError, CommandError)) as caught:
        check_options(generate_cfg(override))
    assert expected in str(caught.value) and "\n" not in str(caught.value), caught.value


def test_sampling_options_of_every_command_are_checked():
    with pytest.raises(CommandError, match="temperature=hot: must be"):
        sampling_options(generate_cfg("temperature=hot"))
    assert sampling_options(generate_cfg("temperature=0.7", "top_k=5")) == {
        "temperature": 0.7,
        "top_k": 5,
        "top_p": 1.0,
        "min_p": 0.0,
    }


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("prompt_notes=0", "prompt_notes=0: must be a number of notes"),
        ("prompt_notes=-5", "prompt_notes=-5: must be"),
        ("prompt_notes=abc", "prompt_notes=abc: must be"),
    ],
)
def test_prompt_notes_are_checked(override, expected):
    with pytest.raises(GenerationError, match=expected):
        check_options(generate_cfg(override))


def test_an_output_path_that_is_a_folder(tmp_path):
    with pytest.raises(GenerationError, match="is a folder; give a file name"):
        check_options(generate_cfg(f"output_path={tmp_path}"))
    check_options(generate_cfg(f"output_path={tmp_path / 'out.mid'}", "prompt_notes=5"))


def test_cli_temperature_nan_is_one_line_before_loading(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "piano_gpt.generate",
            "checkpoint_path=/no/such/checkpoint",
            "temperature=nan",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1].startswith("error: temperature=nan: must be")


@pytest.mark.parametrize("temperature", [math.nan, math.inf, -math.inf])
def test_sampling_config_refuses_non_finite_temperatures(temperature):
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=temperature)


@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.5])
def test_the_sampler_never_returns_a_masked_id(temperature):
    allowed = torch.tensor([False, True, True, True, False])
    sampler = Sampler(SamplingConfig(temperature=temperature), list(range(8)), allowed)
    logits = torch.tensor([[9.0, math.nan, 1.0, 2.0, 9.0]] * 8)  # nan: a broken model's logit
    ids = sampler(logits)
    assert set(ids.tolist()) <= {2, 3}, ids
    with pytest.raises(GenerationError, match="no allowed token has a finite logit"):
        sampler(torch.full((8, 5), math.nan))


def test_a_lone_surrogate_in_a_store_title_is_one_clear_line(tmp_path):
    pytest.importorskip("sqlalchemy")
    from piano_gpt.store import GenerationStore

    notes = make_notes([60, 62], [80, 80], [0.0, 0.5], [0.4, 0.9])
    with GenerationStore(f"sqlite:///{tmp_path / 'store.sqlite'}") as store:
        with pytest.raises(ValueError) as caught:
            store.save_generation(
                model="m", settings={"seed": 0}, notes=notes, prompt={"title": "bad\udc80", "notes": notes}
            )
        message = str(caught.value)
        assert "prompt title" in message and "lone surrogate" in message and "\n" not in message
        with pytest.raises(ValueError, match="lone surrogate"):
            store.browse(title="bad\udc80")
        with pytest.raises(ValueError, match="lone surrogate"):
            store.save_generation(model="m", settings={"note": "x\ud800"}, notes=notes)
        saved = store.save_generation(
            model="m", settings={"seed": 0}, notes=notes, prompt={"title": "good ♪"}
        )
        assert store.get_generation(saved).prompt.title == "good ♪"
        assert isinstance(store.get_generation(saved).notes, pd.DataFrame)
