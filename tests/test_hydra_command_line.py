"""The Hydra commands' command lines: Hydra's own flags (--cfg, --info, -m, --help, --config-name) work
through ``python -m piano_gpt.X`` and ``piano-gpt X``, our errors stay one line, and file names with
non-ASCII letters work as typed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from piano_gpt.commands import cli
from piano_gpt.commands.base import quote_plain_values
from piano_gpt.train.config import command_line_problem

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "dataset=demo",
    "model=gpt2_demo",
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=2",
    "data.batch_size=2",
    "data.context_size=32",
    "optimizer.max_iters=1",
    "eval_interval=1",
    "eval_iters=1",
    "logging.progress_bar=false",
]


@pytest.mark.parametrize("command", sorted(cli.HYDRA_COMMANDS))
def test_cfg_job_prints_the_config_and_runs_nothing(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main([command, "--cfg", "job"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert isinstance(printed, dict) and printed
    assert list(tmp_path.iterdir()) == []  # nothing ran, nothing written


def test_train_cfg_job_with_overrides_and_config_name(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "piano_gpt.train", "--cfg", "job", "dataset=demo", "data.batch_size=3"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert printed["dataset"]["name"] == "demo" and printed["data"]["batch_size"] == 3
    assert list(tmp_path.iterdir()) == []
    resume = command_line_problem(["--config-name", "resume_training", "--cfg", "job", "checkpoint_path=x"])
    assert resume is None


def test_info_and_help(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--info", "defaults"]) == 0
    out = capsys.readouterr().out
    assert "Defaults List" in out and "model/" in out and "dataset/demo" in out
    with pytest.raises(SystemExit) as done:
        cli.main(["train", "--help"])
    assert done.value.code == 0
    assert "Configuration groups" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--cfg", "jobs"], "argument --cfg/-c: invalid choice: 'jobs'"),
        (["-m", "lr.learning_rate=1e-4,3e-4", "data.bacth_size=3"], "unknown config key data.bacth_size"),
        (["-m", "model=gpt2_demo,gpt2_dmeo"], "Could not find 'model/gpt2_dmeo'"),
        (["--cfg", "job", "data.batch_size"], "Error parsing override 'data.batch_size': missing EQUAL"),
        (["-m", "lr.learning_rate=1e-4,3e-4", "model=gpt2_demo,piano_demo"], None),
    ],
)
def test_flags_and_sweeps_are_checked_in_one_line(argv, expected):
    problem = command_line_problem(argv)
    if expected is None:
        assert problem is None
    else:
        assert problem and expected in problem and "\n" not in problem, problem


def test_multirun_sweep_runs_one_job_per_value(tmp_path):
    done = subprocess.run(
        [
            sys.executable, "-m", "piano_gpt.cli", "train", "-m", "lr.learning_rate=1e-4,3e-4",
            *TINY, f"out_dir={tmp_path / 'runs'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted((tmp_path / "runs").iterdir())
    assert [run.name.rsplit("-", 1)[1] for run in runs] == ["job0", "job1"]
    rates = []
    for run in runs:
        saved = json.loads(next(run.glob("*-last")).joinpath("config.json").read_text())
        rates.append(saved["run"]["lr"]["learning_rate"])
    assert rates == [1e-4, 3e-4]
    assert (tmp_path / "sweep" / "multirun.yaml").exists()


def test_values_the_grammar_rejects_are_quoted_as_typed():
    argv = ["prompt_path=Dvořák.mid", "output_path=plain.mid", "--cfg", "job", "tasks.names=[a,b]"]
    assert quote_plain_values(argv) == [
        "prompt_path='Dvořák.mid'",
        "output_path=plain.mid",
        "--cfg",
        "job",
        "tasks.names=[a,b]",
    ]
    assert quote_plain_values(["prompt_path='Chopin Étude.mid'"]) == ["prompt_path='Chopin Étude.mid'"]


def test_generate_reads_and_writes_files_named_after_dvorak(tmp_path):
    from piano_gpt.midi import make_notes, read_notes, write_notes
    from piano_gpt.model import GPT, GPTConfig
    from piano_gpt.tokenizers import ExponentialTimeTokenizer
    from piano_gpt.train.checkpoint import save_checkpoint

    tokenizer = ExponentialTimeTokenizer()
    model = GPT(GPTConfig(block_size=64, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    write_notes(
        make_notes([60, 64, 67], [70, 80, 90], [0.0, 0.5, 1.0], [0.4, 0.9, 1.4]), tmp_path / "Dvořák.mid"
    )
    done = subprocess.run(
        [
            sys.executable, "-m", "piano_gpt.cli", "generate", "checkpoint_path=ckpt", "prompt_path=Dvořák.mid",
            "output_path=Dvořák-Humoreske.mid", "max_new_tokens=20", "memorisation=false",
        ],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(read_notes(tmp_path / "Dvořák-Humoreske.mid")) >= 3


def test_a_value_still_unparsable_says_how_to_quote():
    problem = command_line_problem(["dataset.extra_datasets=[Dvořák.mid]"])
    assert "quote the value inside the argument, e.g. \"prompt_path='Dvořák.mid'\"" in problem
    assert "\n" not in problem


@pytest.mark.parametrize(
    ("command", "groups"),
    [
        ("generate", []),
        ("eval", ["dataset"]),
        ("piano-eval", ["dataset", "tasks"]),
        ("train-tokenizer", ["dataset", "tokenizer"]),
        ("train", ["dataset", "lr", "model", "tasks", "tokenizer"]),
    ],
)
def test_help_lists_only_the_config_groups_the_command_uses(command, groups, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    listed = sorted(line.split(":")[0] for line in out.split("== Config ==")[0].splitlines() if ": " in line)
    assert listed == groups, out[:2000]
    if groups:
        assert "dataset: demo, full, maestro, small" in out


def test_the_command_body_is_reachable_under_the_wrappers():
    """Tests call a command's body with a composed config as ``main.__wrapped__.__wrapped__(cfg)``."""
    from piano_gpt.commands import generate

    body = generate.main.__wrapped__.__wrapped__
    assert body.__module__ == "piano_gpt.commands.generate" and not hasattr(body, "__wrapped__")
