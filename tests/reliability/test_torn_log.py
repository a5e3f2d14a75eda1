"""A log.jsonl whose last line was torn by a kill mid-write is repaired on resume; a bad line before the
last is real corruption, refused in one line before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from test_resume_guard import TINY, resumed_config

from piano_gpt.train.checkpoint import CheckpointError
from piano_gpt.train.config import CONFIG_DIR
from piano_gpt.train.loop import JsonlLog, read_run_log, summarize_log, train


def test_a_torn_last_line_is_dropped_and_a_bad_middle_line_refused(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"iter": 0, "val_loss": 7.1}\n{"iter": 1, "train_loss": 6.9}\n{"iter": 2, "train_lo')
    assert read_run_log(log) == [{"iter": 0, "val_loss": 7.1}, {"iter": 1, "train_loss": 6.9}]
    JsonlLog(log, resume_iter=2)  # what a resume from iter 2 does: the torn line is gone
    assert log.read_text() == '{"iter": 0, "val_loss": 7.1}\n{"iter": 1, "train_loss": 6.9}\n'
    for bad in ('{"iter": 0, "val_lo', "[1, 2]", '{"iter": "x"}', "\x00\x00\x00"):
        log.write_text(f'{{"iter": 0}}\n{bad}\n{{"iter": 2}}\n')
        with pytest.raises(CheckpointError, match="line 2 is corrupt") as caught:
            read_run_log(log)
        assert "\n" not in str(caught.value)


@pytest.fixture
def run_at_4(tmp_path) -> Path:
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose(
            "gpt2_pretraining", [*TINY, f"out_dir={tmp_path}", "run_name=torn", "optimizer.max_iters=4"]
        )
    return train(cfg)


def test_resume_repairs_a_torn_last_line(run_at_4):
    log = run_at_4 / "log.jsonl"
    with open(log, "a") as handle:
        handle.write('{"iter": 4, "train_loss": 3.2, "l')  # killed mid-write
    checkpoint = run_at_4 / "torn-last"
    train(resumed_config(checkpoint, **{"optimizer.max_iters": 6}), resume_from=str(checkpoint))
    rows = [json.loads(line) for line in log.read_text().splitlines()]  # every line parses
    assert [row["iter"] for row in rows] == [0, 1, 2, 3, 4, 5, 6]
    assert summarize_log(run_at_4)["val"][0][0] == 0


def test_resume_refuses_a_corrupt_log_before_any_work(run_at_4):
    log = run_at_4 / "log.jsonl"
    lines = log.read_text().splitlines()
    lines[1] = lines[1][:10]
    log.write_text("\n".join(lines) + "\n")
    before = {p.name: p.stat().st_mtime_ns for p in run_at_4.rglob("*")}
    checkpoint = run_at_4 / "torn-last"
    with pytest.raises(CheckpointError, match="log.jsonl: line 2 is corrupt"):
        train(resumed_config(checkpoint, **{"optimizer.max_iters": 6}), resume_from=str(checkpoint))
    assert {p.name: p.stat().st_mtime_ns for p in run_at_4.rglob("*")} == before
