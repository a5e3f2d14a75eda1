"""Resuming never destroys a better run: resuming an old copy of ``-last`` into the run folder it came
from, once that run has gone further (and found a better ``-best``), is refused in one line that says
how to resume into a new run or force it; nothing of the run is touched."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from piano_gpt.train.checkpoint import CheckpointError, read_checkpoint_config
from piano_gpt.train.config import CONFIG_DIR
from piano_gpt.train.loop import train

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "dataset=demo",
    "model=gpt2_demo",
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=2",
    "data.batch_size=4",
    "data.context_size=64",
    "eval_iters=2",
    "eval_interval=4",
    "lr.learning_rate=3e-3",
    "lr.warmup_iters=1",
    "logging.progress_bar=false",
    "log_interval=1",
    "system.device=cpu",
]


def resumed_config(checkpoint: Path, **overrides):
    """What ``--config-name=resume_training checkpoint_path=...`` composes: the saved run config."""
    cfg = OmegaConf.create(read_checkpoint_config(checkpoint).run)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def snapshot(run_dir: Path) -> dict:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != "config.yaml"
    }


@pytest.fixture(scope="module")
def k3(tmp_path_factory) -> tuple[Path, Path]:
    """Run k3 to iter 8, its -last copied aside, then on to iter 12: (run folder, the old copy)."""
    out = tmp_path_factory.mktemp("runs")
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("gpt2_pretraining", [*TINY, f"out_dir={out}", "run_name=k3", "optimizer.max_iters=8"])
    run_dir = train(cfg)
    aside = out / "aside" / "k3-last"
    shutil.copytree(run_dir / "k3-last", aside)
    train(
        resumed_config(run_dir / "k3-last", **{"optimizer.max_iters": 12}),
        resume_from=str(run_dir / "k3-last"),
    )
    return run_dir, aside


def test_resuming_an_old_copy_into_a_newer_run_is_refused(k3):
    run_dir, aside = k3
    assert read_checkpoint_config(run_dir / "k3-last").iter_num == 12
    before = snapshot(run_dir)
    with pytest.raises(CheckpointError) as caught:
        train(resumed_config(aside, **{"optimizer.max_iters": 12}), resume_from=str(aside))
    message = str(caught.value)
    assert "\n" not in message
    assert "k3-last (iter 12, newer than iter 8 resumed from)" in message
    assert "run_name=<new name>" in message and "force_resume=true" in message
    assert snapshot(run_dir) == before  # -last, -best and log.jsonl untouched


def test_a_better_best_alone_is_protected(k3, tmp_path):
    """A run folder whose -last is not newer but whose -best beats the resumed checkpoint's best."""
    run_dir, aside = k3
    copy = tmp_path / "k3"
    shutil.copytree(run_dir / "k3-best", copy / "k3-best")
    best, old = read_checkpoint_config(copy / "k3-best"), read_checkpoint_config(aside)
    assert best.best_val_loss < old.best_val_loss  # the scenario: training went on to a better model
    cfg = resumed_config(aside, out_dir=str(tmp_path))
    with pytest.raises(CheckpointError, match=r"would replace its k3-best \(val loss [0-9.]+, better than"):
        train(cfg, resume_from=str(aside))


def test_a_new_run_name_or_force_resumes(k3, tmp_path):
    run_dir, aside = k3
    cfg = resumed_config(aside, out_dir=str(run_dir.parent), run_name="k3-from-8")
    new_dir = train(cfg, resume_from=str(aside))
    assert new_dir.name == "k3-from-8" and read_checkpoint_config(new_dir / "k3-from-8-last").iter_num == 8
    forced = tmp_path / "k3"
    shutil.copytree(run_dir, forced)
    train(resumed_config(aside, out_dir=str(tmp_path)), resume_from=str(aside), force_resume=True)
    assert read_checkpoint_config(forced / "k3-last").iter_num == 8  # replaced, as asked


def test_resuming_the_run_own_last_is_allowed(k3, tmp_path):
    run_dir, _ = k3
    copy = tmp_path / "k3"
    shutil.copytree(run_dir, copy)
    train(resumed_config(copy / "k3-last", out_dir=str(tmp_path)), resume_from=str(copy / "k3-last"))
    assert read_checkpoint_config(copy / "k3-last").iter_num == 12


def test_the_command_refuses_in_one_line(k3):
    run_dir, aside = k3
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "piano_gpt.train",
            "--config-name=resume_training",
            f"checkpoint_path={aside}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: resuming") and "force_resume=true" in lines[0]
