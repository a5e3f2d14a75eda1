"""examples/quickstart.py runs offline on a tiny checkpoint (with task tokens, and without: the demo's)."""

import importlib.util
from pathlib import Path

import torch

from piano_gpt.midi import read_notes
from piano_gpt.model import GPT, GPTConfig
from piano_gpt.tasks import add_task_tokens
from piano_gpt.tokenizers import ExponentialTimeTokenizer
from piano_gpt.train.checkpoint import save_checkpoint

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def quickstart():
    spec = importlib.util.spec_from_file_location("quickstart", QUICKSTART)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny(path, task_tokens: bool):
    tokenizer = ExponentialTimeTokenizer()
    if task_tokens:
        add_task_tokens(tokenizer)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=256, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=32))
    return save_checkpoint(path, model, tokenizer)


def test_quickstart_writes_midi_pictures_and_sound(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIANO_GPT_SOUNDFONT", "none")  # the numpy synthesizer: fast, the same everywhere
    run = tmp_path / "runs" / "r"
    tiny(run / "r-best", task_tokens=True)
    quickstart().main([str(run), "--out", str(tmp_path / "out"), "--max-new-tokens", "96"])
    printed = capsys.readouterr().out
    assert "bits per note" in printed and "task above_median_prediction:" in printed
    for stem in ("continuation", "task"):
        assert len(read_notes(tmp_path / "out" / f"{stem}.mid")) > 0
        assert (tmp_path / "out" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / "out" / f"{stem}.wav").read_bytes()[:4] == b"RIFF"


def test_quickstart_on_a_pretrained_only_checkpoint_skips_the_task(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIANO_GPT_SOUNDFONT", "none")
    checkpoint = tiny(tmp_path / "demo-best", task_tokens=False)
    quickstart().main([str(checkpoint), "--out", str(tmp_path / "out"), "--max-new-tokens", "96"])
    assert "skipped" in capsys.readouterr().out
    assert (tmp_path / "out" / "continuation.wav").exists() and not (tmp_path / "out" / "task.wav").exists()
