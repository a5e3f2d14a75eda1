"""piano_gpt.load and PianoGPT: one-line loading (path, run folder, registry name, hub id), generate,
complete, score, save, push_to_hub. Offline: the hub is huggingface_hub's cache laid out by hand."""

import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from test_registry_hub import REPO_ID, FakeHfApi, offline_cache, publish_to_cache  # noqa: F401 (a fixture)

import piano_gpt
from piano_gpt.generation import generate, task_samples
from piano_gpt.hub import HubError
from piano_gpt.midi import make_notes, write_notes
from piano_gpt.model import GPT, GPTConfig
from piano_gpt.tasks import add_task_tokens
from piano_gpt.tokenizers import ExponentialTimeTokenizer
from piano_gpt.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

TASK = "above_median_prediction"


def tiny(path, seed=0):
    tokenizer = ExponentialTimeTokenizer()
    add_task_tokens(tokenizer)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=128, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=32))
    return save_checkpoint(path, model, tokenizer, metrics={"val_loss": 5.0})


def piece(n=24):
    starts = [0.25 * i for i in range(n)]
    return make_notes([48 + (7 * i) % 30 for i in range(n)], [70] * n, starts, [s + 0.4 for s in starts])


def same_weights(a, b) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values())
    )


def test_load_a_checkpoint_a_run_folder_and_a_registry_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    best = tiny(tmp_path / "tmp" / "runs" / "r" / "r-best", seed=1)
    tiny(tmp_path / "tmp" / "runs" / "r" / "r-last", seed=2)
    by_path = piano_gpt.load(best, device="cpu")
    assert by_path.path == best and by_path.config.val_loss == 5.0
    assert same_weights(piano_gpt.load(tmp_path / "tmp" / "runs" / "r", device="cpu"), by_path)  # its -best
    assert same_weights(piano_gpt.load("r-best", device="cpu"), by_path)  # the name piano-gpt models shows
    assert piano_gpt.load("runs/r/r-last", device="cpu").path.name == "r-last"  # its label
    with pytest.raises(CheckpointError, match="nope: no such checkpoint .* not a hub repo id"):
        piano_gpt.load("nope")


def test_load_in_bfloat16_generates_on_bfloat16_weights(tmp_path):
    low = piano_gpt.load(tiny(tmp_path / "c"), device="cpu", dtype="bfloat16")
    assert {p.dtype for p in low.model.parameters()} == {torch.bfloat16}
    assert len(low.generate(piece(), max_new_tokens=30, seed=0)) > 0
    with pytest.raises(ValueError, match="dtype='int8': use one of float32, bfloat16"):
        piano_gpt.load(tmp_path / "c", device="cpu", dtype="int8")


def test_generate_complete_and_score_are_the_librarys_own(tmp_path):
    model = piano_gpt.load(tiny(tmp_path / "c"), device="cpu")
    notes = piece()
    write_notes(notes, tmp_path / "prompt.mid")
    options = dict(seed=3, max_new_tokens=40, temperature=1.0, top_k=20)
    from_path = model.generate(tmp_path / "prompt.mid", **options)
    from_table = model.generate(notes, **options)
    pd.testing.assert_frame_equal(from_table, generate(model.model, model.tokenizer, notes, **options)[0])
    pd.testing.assert_frame_equal(from_path, from_table, atol=2e-3, check_dtype=False)
    assert len(model.generate(notes, n_samples=2, **{**options, "seed": 0})) == 2

    target = model.complete(notes, TASK, task_seed=1, seed=0, max_new_tokens=30)
    (expected,) = task_samples(
        model.model, model.tokenizer, notes, TASK, task_seed=1, seed=0, max_new_tokens=30
    )
    pd.testing.assert_frame_equal(target, expected.notes)

    # Bits per note by hand: the piece fits one window, every token but the first is predicted once.
    short = piece(10)
    ids = model.tokenizer.encode(short)
    assert len(ids) <= 128
    with torch.no_grad():
        time = torch.as_tensor(model.tokenizer.music_time(ids))[None]
        logits, _ = model.model(torch.tensor([ids]), time, all_logits=True)
    nll = F.cross_entropy(logits[0, :-1], torch.tensor(ids[1:]), reduction="sum").item()
    assert math.isclose(model.score(short), nll / len(short) / math.log(2), rel_tol=1e-5)
    assert model.score(notes) > 0  # longer than the context: read in windows


def test_save_and_push_to_hub_then_load_the_hub_id_offline(tmp_path, offline_cache):  # noqa: F811
    model = piano_gpt.load(tiny(tmp_path / "c", seed=5), device="cpu")
    saved = model.save(tmp_path / "saved")
    assert same_weights(piano_gpt.load(saved, device="cpu"), model)
    with pytest.raises(CheckpointError, match="already exists"):
        model.save(tmp_path / "saved")

    api = FakeHfApi()  # records what would be sent; published into the cache below
    sent = model.push_to_hub(REPO_ID, api=api)
    assert sent["path_in_repo"] == "" and api.uploads[0]["path_in_repo"] == ""
    files = {name: data for name, data in api.uploads[0]["files"].items()}
    publish_to_cache(
        offline_cache, REPO_ID, {**files, **{f"checkpoints/x-best/{n}": d for n, d in files.items()}}
    )
    from_hub = piano_gpt.load(REPO_ID, device="cpu")
    assert same_weights(from_hub, model) and str(offline_cache) in str(from_hub.path)
    assert same_weights(piano_gpt.load(f"{REPO_ID}/checkpoints/x-best", device="cpu"), model)


def test_a_hub_id_offline_is_one_clear_line(tmp_path, offline_cache, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HubError) as error:
        piano_gpt.load("someone/not-downloaded")
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert "someone/not-downloaded" in message and "offline (HF_HUB_OFFLINE=1)" in message


def test_import_piano_gpt_stays_light():
    code = "import sys, piano_gpt; print('torch' in sys.modules, callable(piano_gpt.load))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "True"], done.stderr


def test_loaded_model_checkpoint_is_verified(tmp_path):
    path = tiny(tmp_path / "c")
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="corrupt"):
        piano_gpt.load(path)
    assert load_checkpoint  # the same verification as load_checkpoint


def test_a_hub_id_with_the_hub_unreachable_is_one_clear_line(tmp_path):
    """The hub endpoint is a closed local port: no network is used, the connection is refused."""
    code = (
        "import piano_gpt\n"
        "try:\n    piano_gpt.load('someone/model')\n"
        "except Exception as error:\n    print(type(error).__name__, error)\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    (line,) = done.stdout.splitlines()
    assert line.startswith(
        "HubError someone/model: not a local checkpoint, and hub repo someone/model could not"
    )
