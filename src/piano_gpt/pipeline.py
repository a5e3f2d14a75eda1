"""One-line loading: ``piano_gpt.load(name_or_path_or_hub_id)`` -> a :class:`PianoGPT` that generates,
completes PIANO tasks, scores pieces, saves itself and goes to the hub.

    import piano_gpt
    model = piano_gpt.load("tmp/demo/demo")            # a checkpoint folder, a run folder (its -best),
                                                       # a name `piano-gpt models` lists, or a hub repo id
    notes = model.generate("prompt.mid", max_notes=64, temperature=1.0, top_p=0.95, seed=0)
    target = model.complete(notes, "above_median_prediction")
    print(model.score(notes), "bits per note")
    model.save("tmp/checkpoints/mine"); model.push_to_hub("me/my-piano-gpt")

A hub repo id (``org/name``) loads the checkpoint at the repo's root, ``org/name/<path>`` the one at
that path (``epr-labs/piano-gpt/checkpoints/<name>``), through huggingface_hub's cache (so offline,
``HF_HUB_OFFLINE=1``, what was downloaded before still loads). Everything is read from safetensors
and JSON only, and verified (sha256) before use.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from piano_gpt.common import pick_device
from piano_gpt.generation import Generation, GenerationConfig, generate_samples, task_samples
from piano_gpt.hub import HubError, cached_checkpoint, upload_checkpoint
from piano_gpt.midi import read_notes
from piano_gpt.registry import DEFAULT_ROOT, list_checkpoints
from piano_gpt.train.checkpoint import (
    CheckpointConfig,
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


def _notes(notes_or_path) -> pd.DataFrame | None:
    """A note table from a note table or a MIDI file's path (None stays None: no prompt)."""
    if notes_or_path is None or isinstance(notes_or_path, pd.DataFrame):
        return notes_or_path
    return read_notes(notes_or_path)


def _one_or_all(generations: list[Generation]) -> pd.DataFrame | list[pd.DataFrame]:
    notes = [g.notes for g in generations]
    return notes[0] if len(notes) == 1 else notes


class PianoGPT:
    """A model with its tokenizer and its checkpoint's config; ``path``: where it was loaded from."""

    def __init__(self, model, tokenizer, config: CheckpointConfig, path: Path | None = None):
        self.model, self.tokenizer, self.config, self.path = model, tokenizer, config, path

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs) -> PianoGPT:
        return load(name_or_path, **kwargs)

    def __repr__(self) -> str:
        return (
            f"PianoGPT({self.path}, {self.model.num_parameters() / 1e6:.2f}M parameters, {self.tokenizer!r})"
        )

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device)

    def generate(
        self, prompt=None, *, composer: str | None = None, dataset: str | None = None, **options
    ) -> pd.DataFrame | list[pd.DataFrame]:
        """The continuation of ``prompt`` (a note table or a MIDI file's path; None: from the
        ``composer``/``dataset`` conditioning alone), on the prompt's clock: one note table, or a list
        of them when ``n_samples > 1``. ``options``: those of ``piano_gpt.generation``
        (:class:`~piano_gpt.generation.GenerationConfig`: ``n_samples``, ``seed``, ``temperature``,
        ``top_k``, ``top_p``, ``min_p``, ``max_new_tokens``, ``max_notes``, ``max_duration``, ...)."""
        generations = generate_samples(
            self.model,
            self.tokenizer,
            _notes(prompt),
            GenerationConfig(**options),
            composer=composer,
            dataset=dataset,
        )
        return _one_or_all(generations)

    def complete(
        self, notes, task: str, *, task_seed: int = 0, **options
    ) -> pd.DataFrame | list[pd.DataFrame]:
        """The PIANO task ``task`` (e.g. ``above_median_prediction``; ``piano-gpt tasks`` lists them) on
        ``notes`` (a note table or a MIDI path): the generated target notes, on the input's clock.
        ``options``: ``n_notes``, ``time_span``, ``composer``, ``dataset`` and the generation options."""
        keys = ("n_notes", "time_span", "composer", "dataset")
        conditioning = {key: options.pop(key) for key in keys if key in options}
        generations = task_samples(
            self.model,
            self.tokenizer,
            _notes(notes),
            task,
            GenerationConfig(**options),
            task_seed=task_seed,
            **conditioning,
        )
        return _one_or_all(generations)

    def score(self, notes, context_size: int | None = None) -> float:
        """Bits per note of a piece (a note table or a MIDI path), as ``piano_gpt.eval`` measures a
        record: every token predicted once, in windows of the model's context."""
        # here, not at the top: piano_gpt.evaluation's metrics import mir_eval (seconds)
        from piano_gpt.evaluation.loss import records_nll

        ids = np.asarray(self.tokenizer.encode(_notes(notes)), dtype=np.int64)
        n_notes = int(self.tokenizer.note_on_counts()[ids].sum())
        if n_notes == 0:
            raise ValueError("no note to score (pitches 21..108)")
        nll, _ = records_nll(self.model, self.tokenizer, [ids], context_size)
        return float(nll.sum()) / n_notes / math.log(2)

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the checkpoint folder ``path`` (weights, tokenizer, config; no training state)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise CheckpointError(f"{path}: already exists (overwrite=True to replace it)")
        return save_checkpoint(
            path,
            self.model,
            self.tokenizer,
            run_config=self.config.run,
            metrics=self.config.metrics,
            training=self.config.training,
        )

    def push_to_hub(
        self,
        repo_id: str,
        path_in_repo: str = "",
        private: bool | None = None,
        token: str | None = None,
        commit_message: str | None = None,
        api=None,
    ) -> dict:
        """Upload the weights (model, tokenizer, config, manifest) to ``repo_id`` at ``path_in_repo``
        (default the repo root: ``piano_gpt.load(repo_id)`` loads it back); returns what was sent.
        ``api``: an ``HfApi`` (default one with ``token``)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="piano_gpt_push_") as staging:
            folder = self.save(Path(staging) / "checkpoint")
            return upload_checkpoint(
                folder,
                repo_id=repo_id,
                path_in_repo=path_in_repo,
                private=private,
                token=token,
                commit_message=commit_message,
                api=api,
            )


def _registry_match(name: str, root) -> Path | None:
    matches = [info.path for info in list_checkpoints(root) if name in (info.name, info.label)]
    if len(matches) > 1:
        raise CheckpointError(f"{name}: several checkpoints have this name ({', '.join(map(str, matches))})")
    return matches[0] if matches else None


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) >= 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve_model_path(name: str | os.PathLike, root=DEFAULT_ROOT, revision: str | None = None) -> Path:
    """The checkpoint folder ``name`` stands for (see :func:`load`)."""
    text = str(name)
    if Path(text).expanduser().exists():
        return find_checkpoint(Path(text).expanduser())
    found = _registry_match(text, root)
    if found is not None:
        return find_checkpoint(found)
    if not _looks_like_hub_id(text):
        raise CheckpointError(
            f"{text}: no such checkpoint or run folder, no checkpoint of that name under {root} "
            "(piano-gpt models lists them), and not a hub repo id (org/name)"
        )
    parts = text.split("/")
    repo_id, path_in_repo = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        return find_checkpoint(cached_checkpoint(repo_id, path_in_repo, revision))
    except (HubError, CheckpointError):
        raise
    except Exception as error:  # huggingface_hub's errors: offline, not found, no network, auth
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            reason = "offline (HF_HUB_OFFLINE=1) and not in huggingface_hub's cache"
        else:
            first_line = (str(error).strip().splitlines() or [""])[0][:160]
            reason = f"{type(error).__name__}: {first_line}"
        raise HubError(
            f"{text}: not a local checkpoint, and hub repo {repo_id} could not be read ({reason}); "
            "download it while online, or give a checkpoint folder"
        ) from error


WEIGHT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load(
    name_or_path: str | os.PathLike,
    device: str | None = None,
    revision: str | None = None,
    root=DEFAULT_ROOT,
    dtype: str | torch.dtype | None = None,
) -> PianoGPT:
    """A :class:`PianoGPT` from a checkpoint folder, a run folder (its ``-best``), a checkpoint name
    ``piano-gpt models`` lists (under ``root``), or a hub repo id (``org/name``, ``org/name/<path>``;
    ``revision``: a branch, tag or commit). ``device``: ``auto`` (default), ``cpu``, ``cuda``, ...
    ``dtype``: the weights' (``"bfloat16"`` halves what a CPU decoding step reads; default: as saved).
    Raises ``CheckpointError`` / ``HubError`` with one line saying what was not found."""
    path = resolve_model_path(name_or_path, root, revision)
    model, tokenizer, config = load_checkpoint(path, device=pick_device(device))
    if dtype is not None:
        if isinstance(dtype, str) and dtype not in WEIGHT_DTYPES:
            raise ValueError(f"dtype={dtype!r}: use one of {', '.join(WEIGHT_DTYPES)}")
        model = model.to(WEIGHT_DTYPES.get(dtype, dtype))
    return PianoGPT(model, tokenizer, CheckpointConfig.from_json(config), path)


__all__ = ["PianoGPT", "load", "resolve_model_path"]
