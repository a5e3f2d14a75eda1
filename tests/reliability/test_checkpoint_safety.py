"""Checkpoints: checksums verified on load with a clear error, never unpickled, an incompatible version
named as such, and a complete checkpoint on disk at every instant of a save."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch

from piano_gpt.model import GPT, GPTConfig
from piano_gpt.train.checkpoint import (
    CHECKPOINT_FORMAT,
    MANIFEST,
    CheckpointConfig,
    CheckpointError,
    load_checkpoint,
    load_training_state,
    read_checkpoint_config,
    resolve_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)

SRC = Path(__file__).resolve().parents[2] / "src" / "piano_gpt"


def tiny_model(tokenizer, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=32, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16))


def save(path: Path, tokenizer, step: int = 1) -> Path:
    model = tiny_model(tokenizer, seed=step)
    state = {"rng.torch": torch.get_rng_state(), "optimizer.0.exp_avg": torch.ones(3) * step}
    return save_checkpoint(
        path,
        model,
        tokenizer,
        run_config={"step": step},
        metrics={"step": step},
        training_tensors=state,
        training_meta={"iter_num": step},
    )


def rewrite_manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    manifest.update(changes)
    (path / MANIFEST).write_text(json.dumps(manifest))


def rehash(path: Path) -> None:
    """What an attacker who controls the whole directory does: make the checksums match."""
    files = sorted(p.name for p in path.iterdir() if p.name != MANIFEST)
    digests = {f: hashlib.sha256((path / f).read_bytes()).hexdigest() for f in files}
    rewrite_manifest(path, sha256=digests)


@pytest.fixture
def checkpoint(tmp_path, tokenizer) -> Path:
    return save(tmp_path / "run-last", tokenizer)


def test_round_trip(checkpoint, tokenizer):
    model, loaded_tokenizer, config = load_checkpoint(checkpoint)
    reference = tiny_model(tokenizer, seed=1).state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference[name]), name
    assert loaded_tokenizer.vocab_size == tokenizer.vocab_size and config["metrics"] == {"step": 1}
    tensors, meta = load_training_state(checkpoint)
    assert torch.equal(tensors["optimizer.0.exp_avg"], torch.ones(3)) and meta == {"iter_num": 1}


def test_config_json_is_a_checkpoint_config(checkpoint, tokenizer):
    """config.json reads as a CheckpointConfig and writes back byte for byte; unknown keys survive."""
    text = (checkpoint / "config.json").read_text()
    config = read_checkpoint_config(checkpoint, verify=True)
    assert json.dumps(config.to_json(), indent=1, default=str) == text
    assert (config.format_version, config.run, config.metrics) == (
        CHECKPOINT_FORMAT,
        {"step": 1},
        {"step": 1},
    )
    assert config.block_size == 32 and config.tokenizer == tokenizer.name and config.extra == {}
    older = CheckpointConfig.from_json({"model": None, "future_key": [1], "created": "2024-01-01T00:00:00"})
    assert (older.model, older.training, older.format_version, older.iter_num) == ({}, {}, None, None)
    assert older.to_json()["future_key"] == [1] and older.created == "2024-01-01T00:00:00"


@pytest.mark.parametrize(
    "name",
    [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "training_state.safetensors",
        "training_state.json",
    ],
)
def test_a_corrupt_file_is_named(checkpoint, name):
    data = bytearray((checkpoint / name).read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    (checkpoint / name).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{name} is corrupt \\(sha256 mismatch\\)") as caught:
        load_checkpoint(checkpoint)
    assert str(checkpoint) in str(caught.value)


def test_missing_and_unlisted_files(checkpoint):
    (checkpoint / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json is missing"):
        verify_checkpoint(checkpoint)
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    del manifest["sha256"]["model.safetensors"]  # an unverified weights file is not accepted
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="no checksum for model.safetensors"):
        verify_checkpoint(checkpoint)
    rewrite_manifest(checkpoint, sha256={"../outside.json": "0" * 64})
    with pytest.raises(CheckpointError, match="no checksum for|outside the checkpoint"):
        verify_checkpoint(checkpoint)


@pytest.mark.parametrize("manifest", [None, b"", b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_a_missing_or_unreadable_manifest(checkpoint, manifest):
    if manifest is None:
        (checkpoint / MANIFEST).unlink()
        expected = "incomplete checkpoint"
    else:
        (checkpoint / MANIFEST).write_bytes(manifest)
        expected = "manifest.json is (unreadable|not a JSON object)"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(checkpoint)


def test_incompatible_versions_say_so(checkpoint):
    rewrite_manifest(checkpoint, format_version=CHECKPOINT_FORMAT + 1)
    with pytest.raises(
        CheckpointError, match=f"format {CHECKPOINT_FORMAT + 1} was written by a newer piano_gpt"
    ):
        load_checkpoint(checkpoint)
    rewrite_manifest(checkpoint, format_version=0)
    with pytest.raises(CheckpointError, match="format 0 is not supported by this piano_gpt"):
        load_checkpoint(checkpoint)
    # A config.json from another version under a current manifest (hand-edited): refused as well.
    rewrite_manifest(checkpoint, format_version=CHECKPOINT_FORMAT)
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    rehash(checkpoint)
    with pytest.raises(CheckpointError, match="format 99 was written by a newer piano_gpt"):
        load_checkpoint(checkpoint)


def test_weights_that_do_not_fit_the_model_are_a_clear_error(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    config["model"]["n_embd"] = 32
    (checkpoint / "config.json").write_text(json.dumps(config))
    rehash(checkpoint)
    with pytest.raises(CheckpointError, match="model.safetensors does not hold this model's weights"):
        load_checkpoint(checkpoint)


class Payload:
    """Unpickling this writes a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def test_loading_never_runs_code(tmp_path, checkpoint):
    marker = tmp_path / "code-ran"
    bomb = pickle.dumps({"weights": Payload(marker)})
    zipped = tmp_path / "bomb.pt"
    torch.save({"weights": Payload(marker)}, zipped)  # the torch.save (zip) flavour too
    for name, data in [("model.safetensors", bomb), ("model.safetensors", zipped.read_bytes())]:
        (checkpoint / name).write_bytes(data)
        rehash(checkpoint)
        with pytest.raises(CheckpointError, match="model.safetensors"):
            load_checkpoint(checkpoint)
        assert not marker.exists()
    (checkpoint / "training_state.safetensors").write_bytes(bomb)
    rehash(checkpoint)
    with pytest.raises(CheckpointError, match="training_state.safetensors is unreadable"):
        load_training_state(checkpoint)
    (checkpoint / "tokenizer.json").write_bytes(bomb)
    with pytest.raises(CheckpointError):
        load_checkpoint(checkpoint, verify=False)
    # A pickle file given as the checkpoint is refused, with the reason.
    with pytest.raises(CheckpointError, match="pickle files .* are never loaded"):
        load_checkpoint(zipped)
    assert not marker.exists()


def test_no_pickle_loading_anywhere_in_the_package():
    # The one torch.load: the converter of the original's .pt files, with weights_only=True and an
    # allow-list of OmegaConf types (tests/test_convert.py proves a pickle that runs code is refused).
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if path.relative_to(SRC).as_posix() == "train/convert.py":
            loads = [line for line in text.splitlines() if "torch.load(" in line]
            assert loads and all("weights_only=True" in line for line in loads), loads
            text = text.replace("torch.load(", "")
        for needle in ("torch.load(", "pickle.load", "pickle.Unpickler", "allow_pickle=True", "joblib.load"):
            if needle in text:
                offenders.append(f"{path.relative_to(SRC)}: {needle}")
    assert not offenders


# --- atomicity: a complete checkpoint resolves at every instant of a save ---------------------------


FS_CALLS = {os.replace, os.rename, os.unlink, os.remove, os.rmdir, os.mkdir}


def save_while_probing(path: Path, tokenizer, step: int) -> list[int]:
    """Save, and at every filesystem change inside ``save_checkpoint`` (each rename, each file
    removed by rmtree, each directory made), load what a resume would load at that instant: a SIGKILL
    there would leave exactly that. Returns the steps seen."""
    seen: list[int] = []

    def probe() -> None:
        config = verify_checkpoint(resolve_checkpoint(path))  # raises if none is complete
        seen.append(config["metrics"]["step"])

    def profiler(frame, event, arg):
        if event in ("c_call", "c_return") and arg in FS_CALLS:
            probe()

    sys.setprofile(profiler)
    try:
        save(path, tokenizer, step)
    finally:
        sys.setprofile(None)
    probe()
    return seen


def test_a_checkpoint_always_resolves_while_overwriting(tmp_path, tokenizer):
    path = save(tmp_path / "run-last", tokenizer, step=1)
    save(tmp_path / "run-last.tmp", tokenizer, step=7)  # a leftover of a save killed mid-write...
    (tmp_path / "run-last.tmp" / MANIFEST).unlink()  # ...so incomplete
    seen = save_while_probing(path, tokenizer, step=2)
    assert len(seen) > 10 and set(seen) == {1, 2}
    assert seen == sorted(seen)  # never back to the old one once the new one is in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-last"]


def test_a_checkpoint_always_resolves_after_a_crash_between_the_renames(tmp_path, tokenizer):
    path = save(tmp_path / "run-last", tokenizer, step=1)
    os.replace(path, tmp_path / "run-last.old")  # the state a kill between the two renames leaves
    assert resolve_checkpoint(path) == tmp_path / "run-last.old"
    seen = save_while_probing(path, tokenizer, step=2)
    assert set(seen) == {1, 2} and seen == sorted(seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-last"]


class FailingTokenizer:
    """A save that dies half-way (here: writing the tokenizer)."""

    def __init__(self, tokenizer):
        self.vocab_size, self.name = tokenizer.vocab_size, tokenizer.name

    def save(self, path):
        Path(path).write_text("{")
        raise OSError(28, "No space left on device")


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, tokenizer):
    path = save(tmp_path / "run-last", tokenizer, step=1)
    with pytest.raises(CheckpointError, match="no space left on the disk"):
        save_checkpoint(path, tiny_model(tokenizer), FailingTokenizer(tokenizer))
    assert verify_checkpoint(path)["metrics"] == {"step": 1}
    assert not (tmp_path / "run-last.tmp").exists()  # the half-written folder is removed
