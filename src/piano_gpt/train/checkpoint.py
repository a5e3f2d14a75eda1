"""Checkpoints: a directory of safetensors + JSON, written atomically, verified on load, never pickle.

``<name>/``
- ``model.safetensors``: the weights;
- ``config.json``: format version, model config, the run config, metrics, training figures;
- ``tokenizer.json``: the tokenizer, so a checkpoint is self-contained;
- ``training_state.safetensors`` + ``training_state.json`` (optional): optimizer, grad scaler,
  schedule and data position, every RNG state: what exact resume needs;
- ``manifest.json``: sha256 of every other file, written last. A directory without a valid
  manifest is incomplete and is never loaded.

Writes go to ``<name>.tmp``; the finished directory then replaces ``<name>`` through a rename, the
previous version parked at ``<name>.old`` for the instant between the two renames (and recovered from
there if a crash falls exactly between them).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

from piano_gpt.model import GPT, GPTConfig
from piano_gpt.schema import Rule, check_values
from piano_gpt.tokenizers import MidiTokenizer, load_tokenizer

CHECKPOINT_FORMAT = 1
MANIFEST = "manifest.json"
log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or from an incompatible version."""


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


@dataclass
class CheckpointConfig:
    """A checkpoint's ``config.json``, typed: the one place its keys are spelled.

    ``model``: the ``GPTConfig`` as a dict; ``run``: the run config the training saved (its
    ``dataset`` section names the training data); ``metrics``: ``val_loss``, ``best_val_loss``, ...;
    ``training``: ``iter_num``, ``tokens_seen``, ...; ``tokenizer``: the tokenizer's name;
    ``extra``: keys this version does not know, kept so that :meth:`to_json` gives them back.
    Missing or non-object sections read as ``{}``, missing figures as None.
    """

    format_version: Any = CHECKPOINT_FORMAT
    model: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    parameter_count: int | None = None
    git_commit: str | None = None
    created: str | None = None
    tokenizer: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> CheckpointConfig:
        data = _mapping(data)
        sections = ("model", "run", "metrics", "training")
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            format_version=data.get("format_version"),
            **{name: _mapping(data.get(name)) for name in sections},
            **{name: data.get(name) for name in known - {"format_version", *sections}},
            extra={key: value for key, value in data.items() if key not in known},
        )

    def to_json(self) -> dict:
        """The ``config.json`` object (keys in the order :func:`save_checkpoint` writes them)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**data, **self.extra}

    @property
    def block_size(self) -> int:
        """The model's context length (KeyError / TypeError / ValueError when config.json has none)."""
        return int(self.model["block_size"])

    # The training figures inside the sections (None when missing).
    tokens_seen = property(lambda self: self.training.get("tokens_seen"))
    iter_num = property(lambda self: self.training.get("iter_num"))
    val_loss = property(lambda self: self.metrics.get("val_loss"))
    best_val_loss = property(lambda self: self.metrics.get("best_val_loss"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# --- RNG and optimizer state as tensors + JSON ---------------------------------------------------


def capture_rng_state(numpy_rng: np.random.Generator | None = None) -> tuple[dict, dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    python_state = random.getstate()
    meta = {
        "python": [python_state[0], list(python_state[1]), python_state[2]],
        "numpy_global": _numpy_legacy_state(),
        "numpy": numpy_rng.bit_generator.state if numpy_rng is not None else None,
    }
    return tensors, meta


def _numpy_legacy_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def restore_rng_state(tensors: dict, meta: dict, numpy_rng: np.random.Generator | None = None) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy_global"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if numpy_rng is not None and meta.get("numpy") is not None:
        numpy_rng.bit_generator.state = meta["numpy"]


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    return optimizer_state_to_tensors(optimizer.state_dict())


def optimizer_state_to_tensors(state: dict) -> tuple[dict, dict]:
    """An optimizer state dict (states keyed by parameter index) as tensors + JSON metadata."""
    tensors, meta_state = {}, {}
    for index, values in state["state"].items():
        meta_state[str(index)] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                meta_state[str(index)][key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": meta_state}


def optimizer_state_from_tensors(tensors: dict, meta: dict) -> dict:
    """The inverse of :func:`optimizer_state_to_tensors`: a state dict keyed by parameter index."""
    state: dict[int, dict] = {int(i): dict(values) for i, values in meta["scalars"].items()}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    optimizer.load_state_dict(optimizer_state_from_tensors(tensors, meta))


# --- save / load ---------------------------------------------------------------------------------


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, default=str))


def save_checkpoint(
    path: str | os.PathLike,
    model: GPT,
    tokenizer: MidiTokenizer,
    run_config: dict | None = None,
    metrics: dict | None = None,
    training: dict | None = None,
    training_tensors: dict | None = None,
    training_meta: dict | None = None,
) -> Path:
    """Write a checkpoint directory atomically; returns its path."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    old = path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    try:
        raw_model = getattr(model, "_orig_mod", model)
        save_model(raw_model, str(tmp / "model.safetensors"))
        tokenizer.save(tmp / "tokenizer.json")
        config = CheckpointConfig(
            format_version=CHECKPOINT_FORMAT,
            model=raw_model.config.to_dict(),
            run=run_config or {},
            metrics=metrics or {},
            training=training or {},
            parameter_count=raw_model.num_parameters(),
            git_commit=git_commit(),
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            tokenizer=tokenizer.name,
        )
        _write_json(tmp / "config.json", config.to_json())
        if training_tensors is not None:
            save_file(training_tensors, str(tmp / "training_state.safetensors"))
            _write_json(tmp / "training_state.json", training_meta or {})
        files = sorted(p.name for p in tmp.iterdir())
        _write_json(
            tmp / MANIFEST,
            {"format_version": CHECKPOINT_FORMAT, "sha256": {f: sha256_file(tmp / f) for f in files}},
        )
        _fsync_dir(tmp)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written folder left behind
        if _disk_full(error):
            raise CheckpointError(
                f"{path}: not saved, no space left on the disk of {path.parent} ({error}); free some "
                "space (the previous checkpoint is kept)"
            ) from error
        raise

    # At every instant one complete checkpoint resolves (see resolve_checkpoint): ``path``, or ``old``
    # between the two renames. When ``path`` is missing, ``old`` is the recovered copy of a save that
    # died between them: it stays until the new checkpoint is in place.
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def _disk_full(error: BaseException) -> bool:
    """A full disk or quota, as an OSError or as safetensors' own error (which carries only the text)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(error, Exception) and any(
        text in str(error) for text in ("No space left on device", "Disk quota exceeded")
    )


def _fsync_dir(path: Path) -> None:
    for child in path.iterdir():
        with open(child, "rb") as handle:
            os.fsync(handle.fileno())


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The directory to load: ``path``, or its ``.old`` twin if a crash fell between the two renames."""
    path = Path(path)
    if (path / MANIFEST).exists():
        return path
    old = path.with_name(path.name + ".old")
    if not path.exists() and (old / MANIFEST).exists():
        return old
    if path.is_file():
        raise CheckpointError(
            f"{path}: a checkpoint is a directory (model.safetensors, config.json, ...); "
            "pickle files (.pt, .ckpt) are never loaded, since loading them can run code"
        )
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    raise CheckpointError(f"{path}: incomplete checkpoint (no {MANIFEST}); it was never finished")


RUN_CHECKPOINTS = ("best", "last")  # what training writes in a run folder: <run>-best, <run>-last


def find_checkpoint(path: str | os.PathLike, prefer: str = "best") -> Path:
    """The checkpoint directory ``path`` names, for every consumer: a checkpoint directory itself, or a
    run folder (``tmp/runs/<run>``, ``tmp/demo/demo``) holding ``<run>-best`` and ``<run>-last``. Of a
    run folder ``prefer`` is taken ("best" to evaluate or generate, "last" to resume), the other where
    it is missing, and one log line says which. Raises :class:`CheckpointError` otherwise."""
    path = Path(path)
    try:
        return resolve_checkpoint(path)
    except CheckpointError:
        if not path.is_dir() or any((path / name).exists() for name in ("model.safetensors", "config.json")):
            raise  # a file, a missing path, or an unfinished checkpoint: its own message
    names = {child.name.removesuffix(".old") for child in path.iterdir() if child.is_dir()}
    for kind in sorted(RUN_CHECKPOINTS, key=lambda kind: kind != prefer):
        found = []
        for name in sorted(n for n in names if n.endswith(f"-{kind}")):
            try:
                found.append(resolve_checkpoint(path / name))
            except CheckpointError:
                continue  # a checkpoint still being written
        if len(found) > 1:
            raise CheckpointError(
                f"{path}: holds several runs ({', '.join(p.name for p in found)}): name one checkpoint"
            )
        if found:
            log.info("%s is a run folder: using its %s checkpoint %s", path, kind, found[0])
            return found[0]
    raise CheckpointError(
        f"{path}: neither a checkpoint (no {MANIFEST}) nor a run folder (no <run>-best or <run>-last inside)"
    )


REQUIRED_FILES = ("model.safetensors", "config.json", "tokenizer.json")


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path.parent}: {path.name} is unreadable ({what}: {error})") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{path.parent}: {path.name} is not a JSON object ({what})")
    return data


def check_format(path: Path, version) -> None:
    """A clear error for a checkpoint written by another format version of piano_gpt."""
    if version == CHECKPOINT_FORMAT:
        return
    if isinstance(version, int) and version > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {version} was written by a newer piano_gpt; this one reads format "
            f"{CHECKPOINT_FORMAT}: upgrade piano_gpt to load it"
        )
    raise CheckpointError(
        f"{path}: checkpoint format {version!r} is not supported by this piano_gpt (format {CHECKPOINT_FORMAT})"
    )


def verify_checkpoint(path: str | os.PathLike) -> dict:
    """Check format version and every file's sha256; returns the parsed config.json."""
    path = resolve_checkpoint(path)
    manifest = _read_json(path / MANIFEST, "the manifest")
    check_format(path, manifest.get("format_version"))
    hashes = manifest.get("sha256")
    if not isinstance(hashes, dict):
        raise CheckpointError(f"{path}: {MANIFEST} lists no sha256 checksums")
    for name in REQUIRED_FILES:
        if name not in hashes:
            raise CheckpointError(f"{path}: {MANIFEST} has no checksum for {name}")
    for name, expected in hashes.items():
        if Path(name).name != name or name in (".", ".."):
            raise CheckpointError(f"{path}: {MANIFEST} names a file outside the checkpoint ({name!r})")
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        if sha256_file(file) != expected:
            raise CheckpointError(f"{path}: {name} is corrupt (sha256 mismatch)")
    config = _read_json(path / "config.json", "the checkpoint config")
    check_format(path, config.get("format_version"))
    return config


def read_checkpoint_config(path: str | os.PathLike, verify: bool = False) -> CheckpointConfig:
    """The :class:`CheckpointConfig` of a checkpoint directory; ``verify``: check every file's sha256
    first (:func:`verify_checkpoint`), else read config.json only (cheap)."""
    path = resolve_checkpoint(path)
    data = verify_checkpoint(path) if verify else _read_json(path / "config.json", "the checkpoint config")
    return CheckpointConfig.from_json(data)


def resume_would_replace(resume_from: str | os.PathLike, run_dir: Path, run_name: str) -> str | None:
    """What resuming from ``resume_from`` into ``run_dir`` would destroy, or None.

    A resumed run writes ``<run_name>-last`` (and ``-best`` when it improves on the best loss it
    carries) from its own, older history: a ``-last`` further along or a ``-best`` better than that
    best would be silently replaced. Checkpoints that cannot be read are not protected here (saving
    replaces an incomplete one anyway)."""
    source_dir = resolve_checkpoint(resume_from)
    source = read_checkpoint_config(source_dir)
    source_iter, source_best = source.iter_num, source.best_val_loss
    try:
        last_dir = resolve_checkpoint(run_dir / f"{run_name}-last")
        last = read_checkpoint_config(last_dir)
    except (CheckpointError, OSError):
        last_dir = last = None
    if last_dir is not None and last_dir.resolve() != source_dir.resolve():
        if _number(last.iter_num) and _number(source_iter) and last.iter_num > source_iter:
            return f"{last_dir.name} (iter {last.iter_num}, newer than iter {source_iter} resumed from)"
    try:
        best_dir = resolve_checkpoint(run_dir / f"{run_name}-best")
        best = read_checkpoint_config(best_dir)
    except (CheckpointError, OSError):
        best_dir = best = None
    if best_dir is not None and best_dir.resolve() != source_dir.resolve():
        best_loss = best.best_val_loss if _number(best.best_val_loss) else best.val_loss
        if _number(best_loss) and _number(source_best) and best_loss < source_best:
            return (
                f"{best_dir.name} (val loss {best_loss:.4g}, better than the {source_best:.4g} resumed from)"
            )
    return None


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", verify: bool = True
) -> tuple[GPT, MidiTokenizer, dict]:
    """(model in eval mode, tokenizer, config.json) of a checkpoint directory.

    Only safetensors and JSON are read: loading never unpickles, so it never runs code.
    """
    path = resolve_checkpoint(path)
    config = verify_checkpoint(path) if verify else _read_json(path / "config.json", "the checkpoint config")
    model_config = checked_model_config(path, config)
    check_weight_shapes(path, model_config)  # before a byte is allocated: the header may disagree
    try:
        tokenizer = load_tokenizer(path / "tokenizer.json")
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise CheckpointError(f"{path}: tokenizer.json is unusable ({error})") from error
    if tokenizer.vocab_size > model_config.vocab_size:
        raise CheckpointError(
            f"{path}: tokenizer.json has {tokenizer.vocab_size} tokens, more than the model's "
            f"vocab_size={model_config.vocab_size}; the checkpoint is inconsistent"
        )
    model = GPT(model_config)
    try:
        load_model(model, str(path / "model.safetensors"), device=str(device))
    except Exception as error:  # safetensors raises its own error types for bad headers and shapes
        raise CheckpointError(
            f"{path}: model.safetensors does not hold this model's weights ({type(error).__name__}: {error})"
        ) from error
    model.to(device).eval()
    return model, tokenizer, config


def checked_model_config(path: Path, config: dict) -> GPTConfig:
    """The model config of a checkpoint's config.json, every field checked (``GPTConfig`` checks
    types and bounds); a :class:`CheckpointError` in one line otherwise."""
    try:
        model_config = config["model"]
        if not isinstance(model_config, dict):
            raise TypeError("the model section is not an object")
        return GPTConfig.from_dict(model_config)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: config.json has no usable model config ({error})") from error


def weight_shapes(file: Path) -> dict[str, list[int]]:
    """The tensor names and shapes of a safetensors file, from its header only (nothing is loaded)."""
    with safe_open(str(file), framework="pt") as handle:
        return {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}


def check_weight_shapes(path: Path, model_config: GPTConfig) -> None:
    """Refuse a checkpoint whose config.json declares a model other than the one its weights hold.

    The checksums only say the files are the ones the manifest names, not that they agree: a config
    that declares a huge model would otherwise be built (allocated) before loading the weights fails.
    The expected shapes come from the model built on the meta device (no memory)."""
    weights = path / "model.safetensors"
    try:
        stored = weight_shapes(weights)
    except Exception as error:  # safetensors raises its own error types for bad headers
        raise CheckpointError(
            f"{path}: model.safetensors is unreadable ({type(error).__name__}: {error})"
        ) from error
    layers = {name.split(".")[2] for name in stored if name.startswith("transformer.h.")}
    if len(layers) != model_config.n_layer:
        raise CheckpointError(
            f"{path}: model.safetensors does not hold this model's weights: config.json declares "
            f"n_layer={model_config.n_layer}, the file holds {len(layers)} layers"
        )
    with torch.device("meta"):
        expected = GPT(model_config)
    groups: dict[int, list[tuple[str, torch.Tensor]]] = {}
    for name, tensor in expected.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append((name, tensor))
    known = {name for group in groups.values() for name, _ in group}
    unknown = sorted(set(stored) - known)
    if unknown:
        raise CheckpointError(
            f"{path}: model.safetensors does not hold this model's weights: it has {unknown[0]}, ..."
        )
    for group in groups.values():
        present = [(name, tensor) for name, tensor in group if name in stored]
        if not present:
            raise CheckpointError(
                f"{path}: model.safetensors does not hold this model's weights: no {group[0][0]}"
            )
        for name, tensor in present:
            if stored[name] != list(tensor.shape):
                raise CheckpointError(
                    f"{path}: model.safetensors does not hold this model's weights: config.json declares "
                    f"{name} of shape {list(tensor.shape)}, the file holds {stored[name]}"
                )


TRAINING_STATE_RULES = {
    "iter_num": Rule("int", 0),
    "tokens_seen": Rule("int", 0, optional=True),
    "best_val_loss": Rule("float", finite=False, optional=True),
    "optimizer.param_groups": Rule("list", optional=True),
    "rng.python": Rule("list", optional=True),
    "rng.numpy_global": Rule("list", optional=True),
}


def load_training_state(path: str | os.PathLike) -> tuple[dict, dict]:
    path = resolve_checkpoint(path)
    if not (path / "training_state.safetensors").exists():
        raise CheckpointError(f"{path}: holds weights only, no training state to resume from")
    try:
        tensors = load_file(str(path / "training_state.safetensors"))
    except Exception as error:  # safetensors raises its own error types
        raise CheckpointError(
            f"{path}: training_state.safetensors is unreadable ({type(error).__name__}: {error})"
        ) from error
    meta = _read_json(path / "training_state.json", "the training state")
    try:
        check_values(meta, TRAINING_STATE_RULES)
    except ValueError as error:
        raise CheckpointError(f"{path}: training_state.json is unusable ({error})") from error
    return tensors, meta
