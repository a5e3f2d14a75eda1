"""The local model registry: every checkpoint directory on disk, with what it says about itself.

A checkpoint directory (``piano_gpt.train.checkpoint``) is self-describing: ``config.json`` holds the
model config, the run config, the metrics, the training figures (``iter_num``, ``tokens_seen``), the
parameter count, the git commit and the creation time; ``tokenizer.json`` the tokenizer; and
``manifest.json`` (written last) the sha256 of every file. So the registry is just a walk:

    from piano_gpt.registry import list_checkpoints
    for info in list_checkpoints("tmp"):  # tmp/runs/<run>/<run>-best, tmp/checkpoints/hub/<name>, ...
        print(info.label, info.parameter_count, info.training_tokens, info.val_loss)

Listing reads the JSON files only (cheap); :meth:`CheckpointInfo.verify` checks the sha256 of every
file. Checkpoints downloaded by ``piano_gpt.hub`` land in ``tmp/checkpoints/hub/<name>`` with a
``hub_source.json`` saying where they came from. :func:`register_checkpoint_in_store` records a
checkpoint as a model of the generation store (``piano_gpt.store``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from piano_gpt.train.checkpoint import (
    MANIFEST,
    REQUIRED_FILES,
    CheckpointConfig,
    resolve_checkpoint,
    verify_checkpoint,
)

DEFAULT_ROOT = "tmp"
HUB_SOURCE = "hub_source.json"  # written by piano_gpt.hub next to a downloaded checkpoint's files
DEFAULT_MAX_DEPTH = 6


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_checkpoint_dir(path: Path) -> bool:
    """A checkpoint's manifest lists the sha256 of model.safetensors, config.json and tokenizer.json
    (other folders have a manifest.json too: the token shards, for one)."""
    hashes = _read_json(path / MANIFEST).get("sha256")
    return isinstance(hashes, dict) and all(name in hashes for name in REQUIRED_FILES)


def _created_timestamp(created: Any) -> float | None:
    if not isinstance(created, str) or not created:
        return None
    for form in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(created, form).timestamp()
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(created).timestamp()
    except ValueError:
        return None


@dataclass
class CheckpointInfo:
    """One checkpoint directory and its figures (from config.json; nothing is loaded).

    ``path``: the directory to give ``load_checkpoint``; ``label``: its path relative to the listed
    root; ``modified``: seconds since the epoch, the checkpoint's creation time (config.json
    ``created``) or, when that is missing, the manifest's modification time; ``config``: config.json
    (a :class:`~piano_gpt.train.checkpoint.CheckpointConfig`);
    ``files``: the files the manifest lists (with their sha256); ``hub_source``: where a hub download
    came from (repo_id, path_in_repo, commit, downloaded), None for a local checkpoint.
    """

    path: Path
    label: str
    modified: float
    config: CheckpointConfig = field(default_factory=CheckpointConfig)
    files: dict = field(default_factory=dict)
    hub_source: dict | None = None

    # --- what config.json says ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model(self) -> dict:
        return self.config.model

    @property
    def run(self) -> dict:
        return self.config.run

    @property
    def metrics(self) -> dict:
        return self.config.metrics

    @property
    def training(self) -> dict:
        return self.config.training

    @property
    def parameter_count(self) -> int | None:
        return self.config.parameter_count

    @property
    def training_tokens(self) -> int | None:
        return self.config.tokens_seen

    @property
    def iter_num(self) -> int | None:
        return self.config.iter_num

    @property
    def val_loss(self) -> float | None:
        return self.config.val_loss

    @property
    def best_val_loss(self) -> float | None:
        return self.config.best_val_loss

    @property
    def git_commit(self) -> str | None:
        return self.config.git_commit

    @property
    def created(self) -> str | None:
        return self.config.created

    @property
    def tokenizer(self) -> str | None:
        return self.config.tokenizer

    @property
    def has_training_state(self) -> bool:
        """True when the checkpoint can resume training (optimizer and RNG state included)."""
        return "training_state.safetensors" in self.files

    @property
    def origin(self) -> str:
        if self.hub_source:
            return f"hub:{self.hub_source.get('repo_id')}"
        return "local"

    @property
    def summary(self) -> str:
        """One line for a selector caption: size, shape, tokenizer, data seen, losses, date."""
        parts = []
        if self.parameter_count:
            parts.append(f"{self.parameter_count / 1e6:.2f}M parameters")
        if self.model:
            parts.append(f"{self.model.get('n_layer')} layers, context {self.model.get('block_size')}")
        if self.tokenizer:
            parts.append(f"tokenizer {self.tokenizer}")
        if self.training_tokens:
            parts.append(f"{_si(self.training_tokens)} tokens seen")
        if self.val_loss is not None:
            parts.append(f"val loss {self.val_loss:.3f}")
        if self.hub_source:
            parts.append(f"from {self.hub_source.get('repo_id')}")
        parts.append(time.strftime("%Y-%m-%d %H:%M", time.localtime(self.modified)))
        return ", ".join(str(p) for p in parts)

    def verify(self) -> dict:
        """Check every file's sha256 (``verify_checkpoint``); returns config.json, raises CheckpointError."""
        return verify_checkpoint(self.path)

    def to_dict(self) -> dict:
        """A JSON-ready description (the figures of ``piano-gpt models --json``)."""
        return {
            "name": self.name,
            "path": str(self.path),
            "label": self.label,
            "origin": self.origin,
            "created": self.created,
            "modified": self.modified,
            "parameter_count": self.parameter_count,
            "training_tokens": self.training_tokens,
            "iter_num": self.iter_num,
            "val_loss": self.val_loss,
            "best_val_loss": self.best_val_loss,
            "git_commit": self.git_commit,
            "tokenizer": self.tokenizer,
            "model": self.model,
            "has_training_state": self.has_training_state,
            "hub_source": self.hub_source,
        }


def _si(count: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(count) >= size:
            return f"{count / size:.1f}{unit}"
    return str(int(count))


def checkpoint_info(path: str | os.PathLike, root: str | os.PathLike | None = None) -> CheckpointInfo:
    """The :class:`CheckpointInfo` of one checkpoint directory (CheckpointError when it is not one)."""
    directory = resolve_checkpoint(path)
    shown = Path(path)  # a crash-recovered ``.old`` twin is still listed and loaded under its own name
    manifest = _read_json(directory / MANIFEST)
    config = CheckpointConfig.from_json(_read_json(directory / "config.json"))
    modified = _created_timestamp(config.created)
    if modified is None:
        modified = (directory / MANIFEST).stat().st_mtime
    label = shown.name
    if root is not None:
        try:
            label = str(shown.relative_to(root)) if shown != Path(root) else shown.name
        except ValueError:
            pass
    hub_source = _read_json(directory / HUB_SOURCE) or None
    files = manifest.get("sha256") if isinstance(manifest.get("sha256"), dict) else {}
    return CheckpointInfo(shown, label, modified, config, files, hub_source)


def _roots(root) -> list[Path]:
    if isinstance(root, str | os.PathLike):
        return [Path(root).expanduser()]
    return [Path(r).expanduser() for r in root]


def list_checkpoints(
    root: str | os.PathLike | Iterable[str | os.PathLike] = DEFAULT_ROOT, max_depth: int = DEFAULT_MAX_DEPTH
) -> list[CheckpointInfo]:
    """Every checkpoint directory (one whose ``manifest.json`` lists the model, config and tokenizer)
    under ``root`` (one path or several), newest first (by creation time, then label).

    Unfinished writes (``*.tmp``) are left out; a parked previous version (``*.old``) only shows, under
    its own name, when a crash left it as the only copy (``load_checkpoint`` resolves it the same
    way). A checkpoint's own directory is not searched further; hidden directories are skipped.
    """
    found: dict[Path, CheckpointInfo] = {}
    for base in _roots(root):
        if not base.is_dir():
            continue
        base_depth = len(base.parts)
        for current, dirs, files in os.walk(base):
            here = Path(current)
            if MANIFEST in files and not here.name.endswith((".tmp", ".old")) and is_checkpoint_dir(here):
                dirs[:] = []
                _add(found, here, base)
                continue
            recovered = [d for d in dirs if d.endswith(".old") and not (here / d[: -len(".old")]).exists()]
            for name in recovered:
                if is_checkpoint_dir(here / name):
                    _add(found, here / name[: -len(".old")], base)
            dirs[:] = sorted(d for d in dirs if not d.endswith((".tmp", ".old")) and not d.startswith("."))
            if len(here.parts) - base_depth >= max_depth:
                dirs[:] = []
    return sorted(found.values(), key=lambda info: (-info.modified, info.label))


def _add(found: dict, path: Path, base: Path) -> None:
    key = path.resolve()
    if key in found:
        return
    try:
        found[key] = checkpoint_info(path, base)
    except Exception:  # a directory vanishing mid-walk (a concurrent save) is simply not listed
        return


# --- the table of ``piano-gpt models`` ------------------------------------------------------------------

TABLE_COLUMNS = (
    "name",
    "params",
    "shape",
    "tokens",
    "iter",
    "val_loss",
    "created",
    "commit",
    "origin",
    "path",
)


def _row(info: CheckpointInfo) -> dict[str, str]:
    model = info.model
    shape = f"{model.get('n_layer')}x{model.get('n_embd')} ctx {model.get('block_size')}" if model else "-"
    return {
        "name": info.name,
        "params": f"{info.parameter_count / 1e6:.2f}M" if info.parameter_count else "-",
        "shape": shape,
        "tokens": _si(info.training_tokens) if info.training_tokens else "-",
        "iter": "-" if info.iter_num is None else str(info.iter_num),
        "val_loss": "-" if info.val_loss is None else f"{info.val_loss:.4f}",
        "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(info.modified)),
        "commit": (info.git_commit or "-")[:8],
        "origin": info.origin,
        "path": str(info.path),
    }


def format_table(infos: Iterable[CheckpointInfo]) -> str:
    """A plain-text table, one line per checkpoint (the output of ``piano-gpt models``)."""
    rows = [_row(info) for info in infos]
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in TABLE_COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in TABLE_COLUMNS).rstrip()]
    lines.append("  ".join("-" * widths[c] for c in TABLE_COLUMNS))
    lines += ["  ".join(r[c].ljust(widths[c]) for c in TABLE_COLUMNS).rstrip() for r in rows]
    return "\n".join(lines)


# --- the generation store -----------------------------------------------------------------------------


def register_checkpoint_in_store(
    store, checkpoint_dir: str | os.PathLike, name: str | None = None, verify: bool = True
) -> int:
    """Record a checkpoint as a model of a ``GenerationStore`` (created, or updated when the name is
    known); returns the model id. ``name`` defaults to the directory name; the store keeps the
    absolute path, config.json, the parameter count and the training tokens. ``verify``: check every
    file's sha256 first (CheckpointError when it fails)."""
    info = checkpoint_info(checkpoint_dir)
    config = CheckpointConfig.from_json(verify_checkpoint(info.path)) if verify else info.config
    return store.register_model(
        name or info.name,
        checkpoint_path=str(Path(info.path).resolve()),
        config=config.to_json(),
        parameter_count=config.parameter_count,
        training_tokens=config.tokens_seen,
    )


__all__ = [
    "DEFAULT_ROOT",
    "HUB_SOURCE",
    "CheckpointInfo",
    "checkpoint_info",
    "format_table",
    "list_checkpoints",
    "register_checkpoint_in_store",
]
