"""The README's development commands work after the README's install, venv on PATH or not."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_pre_commit_hooks_bring_their_own_ruff_of_the_pinned_version():
    """`.venv/bin/pre-commit run --all-files` without the venv on PATH: a `language: system` hook
    would look for `ruff` on PATH ("Executable `ruff` not found"); a `language: python` hook gets its
    ruff installed by pre-commit, the same version as the dev extra's."""
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    (pin,) = [d for d in dev if re.match(r"ruff\b", d)]
    assert re.fullmatch(r"ruff==[\d.]+", pin), pin
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    ruff_hooks = [hook for hook in hooks if hook["entry"].split()[0] == "ruff"]
    assert {hook["id"] for hook in ruff_hooks} == {"ruff-format", "ruff-check"}
    for hook in ruff_hooks:
        assert hook["language"] == "python", hook  # not PATH's ruff
        assert hook["additional_dependencies"] == [pin], hook
