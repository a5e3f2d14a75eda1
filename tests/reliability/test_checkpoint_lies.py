"""A checkpoint whose files pass their checksums but say something false or unusable (a huge model
its weights do not hold, a head count that does not divide the width, a tokenizer with a zero time
unit, a training state with a text step number) is refused in one line, before anything is built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_checkpoint_safety import rehash, save

from piano_gpt.train import checkpoint as checkpoint_module
from piano_gpt.train.checkpoint import CheckpointError, load_checkpoint, load_training_state


@pytest.fixture
def checkpoint(tmp_path, tokenizer) -> Path:
    return save(tmp_path / "run-last", tokenizer)


def edit_json(path: Path, name: str, change) -> None:
    """Change one JSON file of a checkpoint and recompute manifest.json as save_checkpoint does."""
    data = json.loads((path / name).read_text())
    change(data)
    (path / name).write_text(json.dumps(data))
    rehash(path)


def refusal(call, *args) -> str:
    with pytest.raises(CheckpointError) as caught:
        call(*args)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def no_real_model(monkeypatch):
    """Building a real (allocated) model fails the test: only meta-device models may be built."""
    real_gpt = checkpoint_module.GPT

    def guarded(config):
        if torch.empty(0).device.type != "meta":
            raise AssertionError(f"a real model was built for {config}")
        return real_gpt(config)

    monkeypatch.setattr(checkpoint_module, "GPT", guarded)


def test_a_config_declaring_a_huge_model_is_refused_before_allocating(checkpoint, no_real_model):
    def huge(config):
        config["model"].update(n_layer=200, n_embd=8192)

    edit_json(checkpoint, "config.json", huge)
    message = refusal(load_checkpoint, checkpoint)
    assert "model.safetensors does not hold this model's weights" in message
    assert "n_layer=200" in message and "1 layers" in message


def test_a_wider_model_with_the_right_layer_count_is_refused_before_allocating(checkpoint, no_real_model):
    edit_json(checkpoint, "config.json", lambda config: config["model"].update(n_embd=4096))
    message = refusal(load_checkpoint, checkpoint)
    assert "config.json declares" in message and "[1241, 4096]" in message and "[1241, 16]" in message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("n_head", 3, "model.n_embd=16 must be divisible by model.n_head=3"),
        ("block_size", -5, "block_size=-5: must be the context length"),
        ("block_size", 0, "block_size=0: must be"),
        ("n_layer", -1, "n_layer=-1: must be the number of blocks"),
        ("n_layer", "2", "n_layer=2: must be"),
        ("n_embd", 0, "n_embd=0: must be the embedding width"),
        ("n_embd", 1 << 20, "n_embd=1048576: must be"),
        ("dropout", "abc", "dropout=abc: must be a probability"),
        ("vocab_size", 1.5, "vocab_size=1.5: must be"),
        ("rotary", "yes", "rotary=yes: must be true or false"),
    ],
)
def test_bad_model_fields_are_refused_in_one_line(checkpoint, no_real_model, field, value, expected):
    edit_json(checkpoint, "config.json", lambda config: config["model"].update({field: value}))
    message = refusal(load_checkpoint, checkpoint)
    assert "config.json has no usable model config" in message and expected in message


def test_a_model_section_that_is_not_an_object(checkpoint, no_real_model):
    edit_json(checkpoint, "config.json", lambda config: config.update(model=[1, 2]))
    assert "no usable model config" in refusal(load_checkpoint, checkpoint)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("time_unit", 0, "time_unit=0: must be seconds per time unit"),
        ("time_unit", -0.01, "time_unit=-0.01: must be"),
        ("time_unit", "x", "time_unit=x: must be"),
        ("max_time_step", 1e30, "max_time_step=1e+30: must be"),
        ("n_velocity_bins", -1, "n_velocity_bins=-1: must be"),
        ("n_special_ids", 10**9, "n_special_ids=1000000000: must be"),
        ("special_tokens", "<GENAI>", "special_tokens=<GENAI>: must be a list"),
        ("special_tokens", [1, 2], "special token 1 is not a string"),
    ],
)
def test_bad_tokenizer_fields_are_refused_in_one_line(checkpoint, no_real_model, field, value, expected):
    edit_json(checkpoint, "tokenizer.json", lambda data: data.update({field: value}))
    message = refusal(load_checkpoint, checkpoint)
    assert "tokenizer.json is unusable" in message and expected in message


def test_a_tokenizer_larger_than_the_model_vocabulary(checkpoint, no_real_model):
    edit_json(checkpoint, "tokenizer.json", lambda data: data.update(n_special_ids=2000))
    assert "more than the model's vocab_size=1241" in refusal(load_checkpoint, checkpoint)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("iter_num", "x", "iter_num=x: must be"),
        ("iter_num", -3, "iter_num=-3: must be"),
        ("iter_num", None, "iter_num=None: must be"),
        ("tokens_seen", 1.5, "tokens_seen=1.5: must be"),
        ("best_val_loss", "low", "best_val_loss=low: must be"),
    ],
)
def test_a_bad_training_state_is_refused_in_one_line(checkpoint, field, value, expected):
    edit_json(checkpoint, "training_state.json", lambda meta: meta.update({field: value}))
    message = refusal(load_training_state, checkpoint)
    assert "training_state.json is unusable" in message and expected in message


def test_the_untouched_checkpoint_still_loads(checkpoint):
    model, tokenizer, _ = load_checkpoint(checkpoint)
    assert model.config.n_layer == 1 and tokenizer.vocab_size == 1241
    assert load_training_state(checkpoint)[1]["iter_num"] == 1
