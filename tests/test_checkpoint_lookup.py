"""One checkpoint lookup for every consumer (train.checkpoint.find_checkpoint): a checkpoint directory or
a run folder (its -best to evaluate or generate, its -last to resume), and the dashboard finding what
``piano-gpt models`` finds (the demo's checkpoint under tmp/demo)."""

import json
import logging

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from piano_gpt import dashboard_logic as dl
from piano_gpt.commands import generate as generate_command
from piano_gpt.commands.piano_eval import checkpoint_of
from piano_gpt.commands.train import resume_config
from piano_gpt.configs import CONFIG_DIR
from piano_gpt.midi import make_notes, read_metadata, write_notes
from piano_gpt.model import GPT, GPTConfig
from piano_gpt.registry import list_checkpoints
from piano_gpt.tokenizers import ExponentialTimeTokenizer
from piano_gpt.train.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, save_checkpoint


def tiny(path, seed=0, run_config=None, training_state=False):
    tokenizer = ExponentialTimeTokenizer()
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=64, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16))
    state = {"tensors": {"rng.torch": torch.get_rng_state()}, "meta": {}} if training_state else {}
    return save_checkpoint(
        path,
        model,
        tokenizer,
        run_config=run_config,
        training_tensors=state.get("tensors"),
        training_meta=state.get("meta"),
    )


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "runs" / "r1"
    tiny(run / "r1-best", seed=1, run_config={"run_name": "r1", "optimizer": {"max_iters": 10}})
    tiny(run / "r1-last", seed=2, run_config={"run_name": "r1", "optimizer": {"max_iters": 10}})
    return run


def test_a_run_folder_gives_its_best_or_its_last_and_says_which(run_dir, caplog):
    with caplog.at_level(logging.INFO, logger="piano_gpt.train.checkpoint"):
        assert find_checkpoint(run_dir) == run_dir / "r1-best"
    assert [r.getMessage() for r in caplog.records] == [
        f"{run_dir} is a run folder: using its best checkpoint {run_dir / 'r1-best'}"
    ]
    assert find_checkpoint(run_dir, prefer="last") == run_dir / "r1-last"
    assert find_checkpoint(run_dir / "r1-last") == run_dir / "r1-last"  # a checkpoint is itself


def test_the_other_one_when_one_is_missing_and_clear_refusals(tmp_path):
    only_last = tmp_path / "only_last"
    tiny(only_last / "x-last")
    assert find_checkpoint(only_last) == only_last / "x-last"
    (only_last / "x-best.tmp").mkdir()  # a save in progress is never taken
    assert find_checkpoint(only_last) == only_last / "x-last"

    several = tmp_path / "runs"
    tiny(several / "a-best")
    tiny(several / "b-best")
    with pytest.raises(CheckpointError, match="holds several runs .*a-best, b-best"):
        find_checkpoint(several)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither a checkpoint .* nor a run folder"):
        find_checkpoint(tmp_path / "empty")
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        find_checkpoint(tmp_path / "unfinished")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        find_checkpoint(tmp_path / "missing")


def test_generate_piano_eval_and_the_dashboard_take_a_run_folders_best(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_notes(make_notes([60, 64, 67], [80, 80, 80], [0.0, 0.5, 1.0], [0.4, 0.9, 1.4]), tmp_path / "in.mid")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(
            config_name="generate",
            overrides=[
                f"checkpoint_path={run_dir}",
                "prompt_path=in.mid",
                "output_path=out.mid",
                "max_new_tokens=8",
            ],
        )
    generate_command.run(cfg)
    assert read_metadata(tmp_path / "out.mid")["checkpoint"] == str(run_dir / "r1-best")

    assert checkpoint_of(OmegaConf.create({"checkpoint_path": str(run_dir)})) == str(run_dir / "r1-best")
    model, _, _ = dl.load_model(run_dir, device="cpu")
    best, _, _ = load_checkpoint(run_dir / "r1-best")
    assert torch.equal(model.transformer.wte.weight, best.transformer.wte.weight)


def test_resume_training_takes_a_run_folders_last(tmp_path):
    run = tmp_path / "r2"
    for kind in ("best", "last"):
        tiny(run / f"r2-{kind}", run_config={"run_name": "r2", "kind": kind}, training_state=True)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(
            config_name="resume_training", overrides=[f"checkpoint_path={run}"], return_hydra_config=True
        )
    HydraConfig.instance().set_config(cfg)  # what @hydra.main does before calling the command
    try:
        saved, path = resume_config(cfg)
    finally:
        HydraConfig.instance().cfg = None
    assert path == str(run / "r2-last") and saved.kind == "last"


def test_the_dashboard_finds_the_demo_checkpoint_as_piano_gpt_models_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(dl.RUNS_ENV, raising=False)
    demo = tiny(tmp_path / "tmp" / "demo" / "demo" / "demo-best")  # where python -m piano_gpt.demo writes
    assert [info.path.resolve() for info in list_checkpoints()] == [demo.resolve()]
    assert [info.path.resolve() for info in dl.list_checkpoints(dl.default_runs_root())] == [demo.resolve()]


def test_eval_takes_a_run_folders_best(run_dir, tmp_path, monkeypatch, capsys):
    """``python -m piano_gpt.eval init_from=tmp/runs/R`` (issue: 'incomplete checkpoint (no manifest.json)')."""
    from piano_gpt.commands import eval as eval_command

    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="eval", overrides=[f"init_from={run_dir}", "max_records=1", "device=cpu"])
    eval_command.main.__wrapped__.__wrapped__(cfg)  # the command's body, under Hydra's two wrappers
    figures = json.loads(capsys.readouterr().out)
    assert figures["checkpoint"] == str(run_dir / "r1-best") and figures["n_records"] == 1
