"""Task training: TaskDataset samples, prompt masking, and the training loop with task=piano_tasks."""

import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from piano_gpt.data.shards import build_shards
from piano_gpt.data.task_datasets import TaskDataset, make_task_datasets
from piano_gpt.tasks import get_task, resolve_tasks, task_special_tokens
from piano_gpt.tokenizers import EOGENAI_TOKEN, GENAI_TOKEN, ExponentialTimeTokenizer, load_tokenizer
from piano_gpt.train.config import CONFIG_DIR, task_names
from piano_gpt.train.loop import summarize_log, train

DEMO = {"name": "demo", "type": "demo", "extra_datasets": []}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory whose tmp/shards holds the demo shards (training builds them there)."""
    root = tmp_path_factory.mktemp("task_training")
    build_shards(DEMO, ExponentialTimeTokenizer(), root / "tmp" / "shards", splits=("train", "validation"))
    return root


@pytest.fixture(scope="module")
def shards(workdir):
    return build_shards(DEMO, ExponentialTimeTokenizer(), workdir / "tmp" / "shards")


def dataset(shards, tokenizer=None, tasks=("above_median_prediction", "top_line_masking-x1"), **options):
    tokenizer = tokenizer or ExponentialTimeTokenizer()
    settings = dict(context_size=256, notes_per_record=32, seed=3, prompt_masking=True)
    settings.update(options)
    return TaskDataset(shards["train"], tokenizer, resolve_tasks(list(tasks)), **settings)


def test_task_tokens_fill_placeholders_only(shards):
    tokenizer = ExponentialTimeTokenizer()
    size = tokenizer.vocab_size
    dataset(shards, tokenizer)
    assert tokenizer.vocab_size == size
    assert all(token in tokenizer.token_to_id for token in task_special_tokens())


def test_items_are_pure_functions_of_seed_and_index(shards):
    a, b = dataset(shards), dataset(shards)
    for i in (0, 7, 123456789):
        for key, value in a[i].items():
            assert torch.equal(value, b[i][key])
    other = dataset(shards, seed=4)
    assert not torch.equal(a[0]["input_ids"], other[0]["input_ids"])


def test_prompt_masking_puts_targets_on_the_target_part_only(shards):
    data = dataset(shards)
    tokenizer = data.tokenizer
    genai, eogenai = tokenizer.token_to_id[GENAI_TOKEN], tokenizer.token_to_id[EOGENAI_TOKEN]
    seen_tasks = set()
    for i in range(12):
        sample, item = data.sample(i), data[i]
        seen_tasks.add(sample["task"])
        inputs, targets = item["input_ids"].numpy(), item["targets"].numpy()
        answer = list(tokenizer.encode(sample["task_sample"].target)) + [eogenai]
        # The supervised tokens are exactly the target's tokens and <EOGENAI>, in order ...
        assert targets[targets != -1].tolist() == answer
        # ... predicted from <GENAI> on: the first supervised position is the <GENAI> input.
        first = int(np.flatnonzero(targets != -1)[0])
        assert inputs[first] == genai
        # Music time restarts at <GENAI> (the target is encoded on the source's clock from 0).
        assert int(item["time_steps"][first]) == 0 < int(item["time_steps"][first - 1])
    assert seen_tasks == {"above_median_prediction", "top_line_masking-x1"}
    # Without prompt masking every next token of the sequence is a target.
    plain = dataset(shards, prompt_masking=False)
    n_ids = min(len(plain.sample(0)["ids"]), 257)
    assert int((plain[0]["targets"] != -1).sum()) == n_ids - 1


def test_sequences_are_shortened_to_fit_never_cut_through_the_target(shards):
    data = dataset(shards, context_size=96, notes_per_record=64)
    eogenai = data.tokenizer.token_to_id[EOGENAI_TOKEN]
    for i in range(10):
        sample = data.sample(i)
        assert len(sample["ids"]) <= 97
        assert sample["ids"][-1] == eogenai
        assert len(sample["notes"]) < 64


def test_subsequence_is_plain_next_token_training(shards):
    data = dataset(shards, tasks=(), prompt_masking=True)
    sample, item = data.sample(5), data[5]
    assert sample["task"] is None
    assert sample["ids"].tolist() == list(data.tokenizer.encode(sample["notes"]))
    n = min(len(sample["ids"]), 257)
    assert int((item["targets"] != -1).sum()) == n - 1
    assert len(sample["notes"]) == 32 and float(sample["notes"]["start"].min()) == 0.0


def test_validation_is_fixed_and_unaugmented(shards):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose(
            "gpt2_piano",
            overrides=[
                "data.context_size=256",
                "data.notes_per_record=32",
                "dataset.augmentation.max_pitch_shift=5",
                "tasks=piano_benchmark_pair",
            ],
        )
    train_data, val_data = make_task_datasets(
        ExponentialTimeTokenizer(),
        shards,
        task_names(cfg),
        context_size=cfg.data.context_size,
        max_music_time=cfg.model.max_music_time,
        seed=cfg.seed,
        notes_per_record=cfg.data.notes_per_record,
        augmentation=OmegaConf.to_container(cfg.dataset.augmentation),
    )
    assert train_data.augmenting and not val_data.augmenting
    assert [t.name for t in train_data.tasks] == ["above_median_prediction", "top_line_masking-x1"]
    assert torch.equal(val_data[3]["input_ids"], val_data[3]["input_ids"])
    assert val_data.seed != train_data.seed


def tiny_cfg(workdir, name, *overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose(
            "gpt2_piano",
            overrides=[
                "model=gpt2_demo",
                "model.n_layer=1",
                "model.n_head=2",
                "model.n_embd=32",
                "data.context_size=128",
                "data.batch_size=4",
                "data.notes_per_record=16",
                "eval_iters=2",
                "lr.warmup_iters=0",
                "lr.learning_rate=3e-3",
                "lr.min_lr=3e-4",
                "logging.progress_bar=false",
                "system.device=cpu",
                f"out_dir={workdir / 'runs'}",
                f"run_name={name}",
                *overrides,
            ],
        )


def test_task_training_loss_falls_and_fine_tunes_a_pretrained_checkpoint(workdir, monkeypatch):
    monkeypatch.chdir(workdir)  # training finds the demo shards in ./tmp/shards
    # Pretraining (no task tokens), then task fine-tuning from its weights: same vocabulary size.
    pre = train(
        tiny_cfg(workdir, "pre", "task=next_token_prediction", "optimizer.max_iters=2", "eval_interval=2")
    )
    pre_ckpt = pre / "pre-last"
    run = train(
        tiny_cfg(
            workdir,
            "tasks",
            "tasks=piano_benchmark_pair",
            "prompt_masking=true",
            "optimizer.max_iters=20",
            "eval_interval=20",
            f"checkpoint_path={pre_ckpt}",
        )
    )
    summary = summarize_log(run)
    assert summary["last_val_loss"] < summary["first_val_loss"] - 0.5
    tokenizer = load_tokenizer(run / "tasks-last" / "tokenizer.json")
    pre_tokenizer = load_tokenizer(pre_ckpt / "tokenizer.json")
    assert tokenizer.vocab_size == pre_tokenizer.vocab_size
    assert get_task("above_median_prediction").token in tokenizer.token_to_id
    assert "<ABOVE_MEDIAN_PREDICTION>" not in pre_tokenizer.token_to_id
    config = json.loads((run / "tasks-last" / "config.json").read_text())
    assert config["run"]["checkpoint_path"] == str(pre_ckpt)
