"""Checkpoints on the Hugging Face Hub: download into the local registry, upload from it.

A model repo holds checkpoint directories (``piano_gpt.train.checkpoint``) under a subfolder:
``<repo_id>/<subfolder>/<name>/{model.safetensors, config.json, tokenizer.json, manifest.json}``.

    from piano_gpt.hub import download_checkpoint, upload_checkpoint
    path = download_checkpoint("gpt2_10M-maestro-20240101-120000-best")  # tmp/checkpoints/hub/<name>
    upload_checkpoint("tmp/runs/<run>/<run>-best")

- repo id: the argument, else ``$PIANO_GPT_HUB_REPO``, else ``epr-labs/piano-gpt``; subfolder: the
  argument, else ``$PIANO_GPT_HUB_SUBFOLDER``, else ``checkpoints`` (``""``: the repo root);
- the token is huggingface_hub's business: ``$HF_TOKEN`` or ``huggingface-cli login``; offline
  (``HF_HUB_OFFLINE=1``) a download is served from huggingface_hub's cache;
- downloads go through huggingface_hub's cache (``snapshot_download`` with
  ``allow_patterns=<subfolder>/<name>/*``, progress bars included), are linked (or copied) into
  ``tmp/checkpoints/hub/<name>``, checked with ``verify_checkpoint`` (sha256 of every file) and only
  then moved in place; ``hub_source.json`` records the repo, the path and the commit;
- uploads are verified first and, by default, carry the weights only (model, config, tokenizer and a
  manifest for those): ``training_state=True`` adds the optimizer and RNG state (to resume training).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from piano_gpt.registry import HUB_SOURCE
from piano_gpt.train.checkpoint import (
    CHECKPOINT_FORMAT,
    MANIFEST,
    REQUIRED_FILES,
    CheckpointError,
    resolve_checkpoint,
    verify_checkpoint,
)

REPO_ENV = "PIANO_GPT_HUB_REPO"
SUBFOLDER_ENV = "PIANO_GPT_HUB_SUBFOLDER"
DEFAULT_REPO_ID = "epr-labs/piano-gpt"
DEFAULT_SUBFOLDER = "checkpoints"
HUB_DOWNLOAD_DIR = Path("tmp") / "checkpoints" / "hub"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl")


class HubError(RuntimeError):
    """A download or upload that cannot be done; the message says why and what to do."""


def check_reachable() -> None:
    """:class:`HubError` in one line, within seconds, when the hub cannot be reached."""
    from piano_gpt.common import hub_unreachable

    reason = hub_unreachable()
    if reason:
        raise HubError(
            f"{reason}: no network, or $HF_ENDPOINT is wrong. `piano-gpt models` lists the local "
            "checkpoints; HF_HUB_OFFLINE=1 downloads from huggingface_hub's cache"
        )


def default_repo_id() -> str:
    return os.environ.get(REPO_ENV) or DEFAULT_REPO_ID


def default_subfolder() -> str:
    value = os.environ.get(SUBFOLDER_ENV)
    return DEFAULT_SUBFOLDER if value is None else value


def _clean_subfolder(subfolder: str | None) -> str:
    subfolder = default_subfolder() if subfolder is None else subfolder
    parts = [p for p in str(subfolder).replace("\\", "/").split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise HubError(f"subfolder {subfolder!r}: '.' and '..' are not allowed")
    return "/".join(parts)


def remote_path(name: str, subfolder: str | None = None) -> str:
    """Where checkpoint ``name`` lives in the repo: ``<subfolder>/<name>``.

    A ``name`` with a ``/`` is taken as the full path in the repo (the subfolder is then ignored)."""
    raw = str(name).strip().replace("\\", "/").strip("/")
    if raw.endswith("/" + MANIFEST):
        raw = raw[: -len(MANIFEST) - 1]
    parts = raw.split("/")
    if not raw or any(p in ("", ".", "..") for p in parts):
        raise HubError(f"{name!r} is not a checkpoint name (e.g. gpt2_10M-maestro-20240101-120000-best)")
    if parts[-1].endswith(PICKLE_SUFFIXES):
        raise HubError(
            f"{name}: piano_gpt checkpoints are directories of safetensors + JSON; pickle files "
            "(.pt, .ckpt, ...) are never loaded, since loading them can run code. Give the checkpoint "
            "directory's name."
        )
    if len(parts) > 1:
        return raw
    prefix = _clean_subfolder(subfolder)
    return f"{prefix}/{raw}" if prefix else raw


# --- download -------------------------------------------------------------------------------------------


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link a (resolved) cache blob into the checkpoint, else copy it: blobs are never modified."""
    source = source.resolve()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _replace_dir(tmp: Path, target: Path) -> None:
    old = target.with_name(target.name + ".old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def list_remote_checkpoints(
    repo_id: str | None = None, subfolder: str | None = None, revision: str | None = None, api=None
) -> list[str]:
    """The checkpoint names (directories holding manifest.json) under the subfolder of the repo."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    prefix = _clean_subfolder(subfolder)
    names = set()
    for file in api.list_repo_files(repo_id or default_repo_id(), repo_type="model", revision=revision):
        path = PurePosixPath(file)
        if path.name == MANIFEST and str(path.parent.parent) == (prefix or "."):
            names.add(path.parent.name)
    return sorted(names)


def _not_found(name: str, where: str, repo_id: str, subfolder: str | None, revision: str | None) -> HubError:
    message = f"no checkpoint {where!r} in {repo_id}"
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        message += " (offline, HF_HUB_OFFLINE=1: only huggingface_hub's cache was searched)"
    else:
        try:
            known = list_remote_checkpoints(repo_id, subfolder, revision)
        except Exception:  # listing only improves the message
            known = None
        if known is not None:
            message += f"; it holds {known}" if known else "; it holds no checkpoint under that subfolder"
    return HubError(message)


def download_checkpoint(
    name: str,
    repo_id: str | None = None,
    subfolder: str | None = None,
    dest_root: str | os.PathLike | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> Path:
    """Download checkpoint ``name`` from the hub into ``<dest_root>/<name>`` (default
    ``tmp/checkpoints/hub``), verify it, and return its path.

    Goes through huggingface_hub's cache (``cache_dir``, default ``$HF_HOME/hub``), so a second call,
    or a call with ``HF_HUB_OFFLINE=1``, needs no network. An existing local copy is replaced only
    once the new one is verified. Raises :class:`HubError` (not found, corrupt download) or
    huggingface_hub's errors (network, authentication)."""
    from huggingface_hub import snapshot_download

    repo_id = repo_id or default_repo_id()
    where = remote_path(name, subfolder)
    local_name = PurePosixPath(where).name
    snapshot = snapshot_download(
        repo_id,
        repo_type="model",
        revision=revision,
        allow_patterns=f"{where}/*",
        cache_dir=cache_dir,
        token=token,
    )
    source = Path(snapshot).joinpath(*where.split("/"))
    if not (source / MANIFEST).is_file():
        raise _not_found(name, where, repo_id, subfolder, revision)

    dest = Path(dest_root) if dest_root is not None else HUB_DOWNLOAD_DIR
    target = dest / local_name
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for file in sorted(source.iterdir()):
            if file.is_file():
                _link_or_copy(file, tmp / file.name)
        try:
            config = verify_checkpoint(tmp)
        except CheckpointError as error:
            raise HubError(
                f"{repo_id}/{where}: the downloaded checkpoint does not verify ({error}); delete "
                f"huggingface_hub's cached copy (huggingface-cli delete-cache) and download again"
            ) from error
        (tmp / HUB_SOURCE).write_text(
            json.dumps(
                {
                    "repo_id": repo_id,
                    "path_in_repo": where,
                    "revision": revision,
                    "commit": Path(snapshot).name,
                    "downloaded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "created": config.get("created"),
                },
                indent=1,
            )
        )
        _replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def cached_checkpoint(repo_id: str, path_in_repo: str = "", revision: str | None = None, token=None) -> Path:
    """The checkpoint at ``path_in_repo`` (``""``: the repo root, as ``from_pretrained`` repos hold one)
    of a hub repo, in huggingface_hub's cache (downloaded there first, unless offline); not verified
    here (``load_checkpoint`` verifies). A run folder's ``-best``/``-last`` come along."""
    from huggingface_hub import snapshot_download

    where = "/".join(p for p in str(path_in_repo).replace("\\", "/").split("/") if p)
    if any(p in (".", "..") for p in where.split("/")):
        raise HubError(f"{path_in_repo!r}: '.' and '..' are not allowed")
    snapshot = snapshot_download(
        repo_id,
        repo_type="model",
        revision=revision,
        allow_patterns=f"{where}/*" if where else None,
        token=token,
    )
    return Path(snapshot).joinpath(*where.split("/")) if where else Path(snapshot)


def download_original_checkpoint(
    filename: str,
    repo_id: str | None = None,
    subfolder: str | None = None,
    dest_root: str | os.PathLike | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
) -> Path:
    """Download an original Piano-GPT ``.pt`` file (``<subfolder>/<filename>`` in the repo, as the
    original's ``download_model.py`` names them) and convert it (``piano_gpt.train.convert``) into
    ``<dest_root>/<filename without .pt>``; returns that checkpoint's path. The ``.pt`` stays in
    huggingface_hub's cache; it is read without running code."""
    from huggingface_hub import hf_hub_download

    from piano_gpt.train.convert import convert_original_checkpoint

    name = PurePosixPath(str(filename).replace("\\", "/")).name
    if not name.endswith(".pt") or name in (".pt",):
        raise HubError(f"{filename!r} is not an original checkpoint file name (NAME.pt)")
    prefix = _clean_subfolder(subfolder)
    local = hf_hub_download(
        repo_id or default_repo_id(),
        name,
        subfolder=prefix or None,
        repo_type="model",
        revision=revision,
        token=token,
    )
    dest = Path(dest_root) if dest_root is not None else HUB_DOWNLOAD_DIR
    return convert_original_checkpoint(local, dest / name[: -len(".pt")])


# --- upload ---------------------------------------------------------------------------------------------


def _stage_weights_only(source: Path, hashes: dict, staging: Path) -> list[str]:
    """A copy (hard links where possible) of the checkpoint without its training state, with a manifest
    for the files kept; returns the file names."""
    kept = {name: digest for name, digest in hashes.items() if not name.startswith("training_state")}
    for name in kept:
        try:
            os.link(source / name, staging / name)
        except OSError:
            shutil.copyfile(source / name, staging / name)
    (staging / MANIFEST).write_text(
        json.dumps({"format_version": CHECKPOINT_FORMAT, "sha256": dict(sorted(kept.items()))}, indent=1)
    )
    return sorted([*kept, MANIFEST])


def upload_checkpoint(
    path: str | os.PathLike,
    repo_id: str | None = None,
    subfolder: str | None = None,
    name: str | None = None,
    training_state: bool = False,
    private: bool | None = None,
    create_repo: bool = True,
    commit_message: str | None = None,
    token: str | bool | None = None,
    api=None,
    path_in_repo: str | None = None,
) -> dict:
    """Upload one checkpoint directory to ``<repo_id>/<subfolder>/<name>`` (``name``: the directory's
    name); returns what was sent: repo_id, path_in_repo, files, url.

    The checkpoint is verified first (a corrupt one is never uploaded). ``training_state=False``
    (default) sends the weights only, with a manifest for those files; ``True`` sends the directory as
    it is. ``create_repo``: create the model repo if it does not exist (``private`` applies then).
    ``api``: an ``HfApi`` (default ``HfApi(token=token)``)."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    source = resolve_checkpoint(path)
    try:
        config = verify_checkpoint(source)
    except CheckpointError as error:
        raise HubError(f"{path}: not uploaded, the checkpoint does not verify ({error})") from error
    hashes = json.loads((source / MANIFEST).read_text())["sha256"]
    repo_id = repo_id or default_repo_id()
    local_name = name or Path(os.path.abspath(path)).name
    # ``path_in_repo`` ("" is the repo root, what from_pretrained-style loading reads) wins over
    # ``<subfolder>/<name>``
    where = remote_path(local_name, subfolder) if path_in_repo is None else path_in_repo.strip("/")
    message = commit_message or (
        f"Upload checkpoint {local_name} ({config.get('parameter_count')} parameters, "
        f"{(config.get('training') or {}).get('tokens_seen')} tokens seen)"
    )
    if create_repo:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="piano_gpt_upload_") as staging:
        if training_state:
            folder, files = source, sorted([*hashes, MANIFEST])
        else:
            folder, files = Path(staging), _stage_weights_only(source, hashes, Path(staging))
        missing = [f for f in REQUIRED_FILES if f not in files]
        if missing:
            raise HubError(f"{path}: the manifest lacks {missing}")
        result = api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=str(folder),
            path_in_repo=where,
            allow_patterns=files,
            commit_message=message,
        )
    url = getattr(result, "commit_url", None) or (str(result) if result is not None else None)
    return {"repo_id": repo_id, "path_in_repo": where, "files": files, "url": url}


def best_checkpoints(runs_root: str | os.PathLike = "tmp/runs") -> list[Path]:
    """Every ``*-best`` checkpoint under the runs folder, newest first (what upload_models.py sends)."""
    from piano_gpt.registry import list_checkpoints

    return [info.path for info in list_checkpoints(runs_root) if info.name.endswith("-best")]


def upload_checkpoints(paths: Iterable[str | os.PathLike], **kwargs) -> list[dict]:
    """:func:`upload_checkpoint` for each path; the repo is created (if asked) once."""
    results = []
    for index, path in enumerate(paths):
        if index:
            kwargs["create_repo"] = False
        results.append(upload_checkpoint(path, **kwargs))
    return results


__all__ = [
    "DEFAULT_REPO_ID",
    "DEFAULT_SUBFOLDER",
    "HUB_DOWNLOAD_DIR",
    "HubError",
    "check_reachable",
    "best_checkpoints",
    "cached_checkpoint",
    "default_repo_id",
    "default_subfolder",
    "download_checkpoint",
    "download_original_checkpoint",
    "list_remote_checkpoints",
    "remote_path",
    "upload_checkpoint",
    "upload_checkpoints",
]
