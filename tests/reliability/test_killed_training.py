"""Training killed with SIGKILL (between checkpoints, and in the middle of a checkpoint write) resumes
to the same final weights as a run never interrupted, and never leaves a half-written checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from piano_gpt.train.checkpoint import CheckpointError, resolve_checkpoint, verify_checkpoint

REPO = Path(__file__).resolve().parents[2]
MAESTRO_DIR = REPO.parent / "shared" / "data" / "maestro"
MAX_ITERS, EVAL_INTERVAL = 24, 4


def pick_dataset() -> list[str]:
    try:
        from piano_gpt.data.demo import load_demo_records

        if load_demo_records("validation"):
            return ["dataset=demo"]
    except Exception:  # the demo corpus is optional here
        pass
    if (MAESTRO_DIR / "maestro-v3.0.0.csv").exists():
        return ["dataset=maestro", f"dataset.path={MAESTRO_DIR}"]
    pytest.skip("neither the demo corpus nor MAESTRO is available")


def command(out_dir: Path, run_name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "piano_gpt.train",
        *pick_dataset(),
        "model=gpt2_demo",
        "data.context_size=64",
        "data.batch_size=2",
        f"optimizer.max_iters={MAX_ITERS}",
        f"eval_interval={EVAL_INTERVAL}",
        "eval_iters=2",
        "log_interval=1",
        "lr.warmup_iters=2",
        "system.device=cpu",
        "logging.progress_bar=false",
        f"out_dir={out_dir}",
        f"run_name={run_name}",
    ]


def resume_command(run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "piano_gpt.train",
        "--config-name=resume_training",
        f"checkpoint_path={run_dir / (run_dir.name + '-last')}",
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def start(cmd: list[str]) -> subprocess.Popen:
    # From the repository root, so the shard cache (tmp/shards) is shared with other runs.
    return subprocess.Popen(
        cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]


def wait_for(process: subprocess.Popen, condition, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(
                f"run ended (code {process.returncode}) before {what}: {process.stderr.read()[-3000:]}"
            )
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    process.stderr.close()


def logged_iter(run_dir: Path) -> int:
    try:
        lines = (run_dir / "log.jsonl").read_text().splitlines()
        return max((json.loads(line)["iter"] for line in lines if line.endswith("}")), default=-1)
    except (OSError, ValueError):
        return -1


def assert_no_half_written_checkpoint(run_dir: Path) -> int:
    """Every checkpoint a resume could load is complete; returns the iteration -last resumes from."""
    for child in filter(Path.is_dir, run_dir.iterdir()):
        if not child.name.endswith(".tmp"):
            verify_checkpoint(child)  # -last, -best, and a .old kept between two renames
        elif not (child / "manifest.json").exists():  # a write in progress is never taken for a checkpoint
            with pytest.raises(CheckpointError, match="incomplete checkpoint"):
                resolve_checkpoint(child)
    return verify_checkpoint(run_dir / f"{run_dir.name}-last")["training"]["iter_num"]


def identity(path: Path) -> tuple:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return ()
    return (path.name, stat.st_ino, stat.st_ctime_ns)


def log_rows(run_dir: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line]
    return [(r["iter"], r.get("train_loss"), r.get("val_loss")) for r in rows]


@pytest.mark.slow
def test_sigkill_and_resume_give_the_same_weights(tmp_path):
    reference = tmp_path / "reference"
    finish(start(command(tmp_path, "reference")))

    run_dir = tmp_path / "killed"
    # 1. Killed between checkpoints (after the one at EVAL_INTERVAL, before the next).
    process = start(command(tmp_path, "killed"))
    wait_for(process, lambda: logged_iter(run_dir) >= EVAL_INTERVAL + 2, "iteration 6")
    kill(process)
    resumes_from = assert_no_half_written_checkpoint(run_dir)
    assert resumes_from >= EVAL_INTERVAL

    # 2. Resumed, then killed while a checkpoint is being written (its .tmp directory exists).
    for _ in range(3):
        stale = {identity(p) for p in run_dir.iterdir()}  # left by an earlier kill

        def fresh(path: Path, stale: set = stale) -> bool:
            return path.is_dir() and identity(path) not in stale

        process = start(resume_command(run_dir))
        wait_for(
            process,
            lambda: any(
                p.name.endswith(".tmp") and fresh(p) and (p / "model.safetensors").exists()
                for p in run_dir.iterdir()
            ),
            "a checkpoint write",
        )
        kill(process)
        caught_mid_write = any(p.name.endswith((".tmp", ".old")) and fresh(p) for p in run_dir.iterdir())
        assert_no_half_written_checkpoint(run_dir)
        if caught_mid_write:
            break
    assert caught_mid_write, "the kill never landed inside a checkpoint write"

    # 3. Resumed to the end.
    finish(start(resume_command(run_dir)))
    assert_no_half_written_checkpoint(run_dir)
    assert not [p for p in run_dir.iterdir() if p.name.endswith((".tmp", ".old"))]

    final = load_file(run_dir / "killed-last" / "model.safetensors")
    expected = load_file(reference / "reference-last" / "model.safetensors")
    assert final.keys() == expected.keys()
    for name in expected:
        assert torch.equal(final[name], expected[name]), name
    assert verify_checkpoint(run_dir / "killed-last")["training"]["iter_num"] == MAX_ITERS
    # The same losses, step by step (the log is cut back to the checkpoint on each resume).
    assert log_rows(run_dir) == log_rows(reference)
