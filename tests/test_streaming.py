"""Streaming generation: notes given out as soon as they are final, the same as the batch call."""

import numpy as np
import pandas as pd
import pytest
import torch

from piano_gpt.generation import ContinuationStream, generate_samples, native, stream
from piano_gpt.generation.engine import STOP_INTERRUPTED, _shift, playable
from piano_gpt.generation.streaming import NoteStream, NoteTables, notes_table
from piano_gpt.midi import make_notes
from piano_gpt.model import GPT, GPTConfig
from piano_gpt.tokenizers import ExponentialTimeTokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return ExponentialTimeTokenizer()


def prompt_notes(seed=0, n=12):
    rng = np.random.default_rng(seed)
    start = np.sort(rng.uniform(1.0, 4.0, n)).round(2)
    return make_notes(
        rng.integers(40, 90, n), rng.integers(20, 120, n), start, start + rng.uniform(0.05, 1.5, n)
    )


def batch_notes(tokenizer, prompt_ids, ids, offset, max_note_seconds):
    """What the batch path computed before streaming: decode everything, drop the prompt's notes,
    shift, make playable."""
    n_prompt = len(tokenizer.decode(prompt_ids))
    decoded = tokenizer.decode(np.concatenate([np.asarray(prompt_ids, np.int64), np.asarray(ids, np.int64)]))
    notes = _shift(decoded.iloc[n_prompt:].reset_index(drop=True), offset)
    return playable(notes, max_note_seconds)


def random_stream(tokenizer, rng, n):
    """Ids a model might draw with no grammar: keys re-struck while held, orphan note offs, strikes of
    one key at one time, long holds; weighted towards events that make notes."""
    pitches = rng.integers(60, 64, n)  # few keys: many same-key interactions
    kinds = rng.choice(4, n, p=[0.3, 0.25, 0.15, 0.3])
    on = np.asarray(tokenizer.note_on_ids)[pitches - 21]
    off = np.asarray(tokenizer.note_off_ids)[pitches - 21]
    velocity = np.asarray(tokenizer.velocity_ids)[rng.integers(0, len(tokenizer.velocity_ids), n)]
    time = np.asarray(tokenizer.time_ids)[rng.integers(0, len(tokenizer.time_ids), n)]
    return np.choose(kinds, [on, off, velocity, time])


@pytest.mark.parametrize("max_note_seconds", [None, 10.0, 0.35])
def test_note_stream_equals_batch_decode(tokenizer, max_note_seconds):
    tables = NoteTables(tokenizer)
    rng = np.random.default_rng(1)
    for trial in range(40):
        prompt = prompt_notes(trial)
        offset = float(prompt["start"].min())
        prompt_ids = tokenizer.encode(_shift(prompt, -offset))
        ids = random_stream(tokenizer, rng, int(rng.integers(1, 120)))
        notes_stream = NoteStream(tables, prompt_ids, offset, max_note_seconds)
        final_before_end = []
        for token in ids:
            before = len(notes_stream.done)
            notes_stream.feed(token)
            final_before_end += notes_stream.done[before:]
        notes_stream.close()
        expected = batch_notes(tokenizer, prompt_ids, ids, offset, max_note_seconds)
        pd.testing.assert_frame_equal(notes_table(notes_stream.done), expected)
        # Nothing given out early is ever changed later: it is in the final table as given.
        final = set(map(tuple, expected.itertuples(index=False)))
        assert all(note in final for note in final_before_end)


def test_a_note_is_given_out_when_its_note_off_is_decoded(tokenizer):
    tables = NoteTables(tokenizer)
    ids = tokenizer.ids_of(["VELOCITY_20", "NOTE_ON_60", "8T", "NOTE_OFF_60", "VELOCITY_10", "NOTE_ON_62"])
    notes_stream = NoteStream(tables, offset=1.0)
    for token in ids[:3]:
        notes_stream.feed(token)
    assert notes_stream.done == []
    notes_stream.feed(ids[3])
    assert notes_stream.done == [(60, tokenizer.bin_velocity(20), 1.0, 1.0 + 8 * 0.01)]
    for token in ids[4:]:
        notes_stream.feed(token)
    assert len(notes_stream.done) == 1  # 62 still held
    notes_stream.close()
    assert notes_stream.done[1][:3] == (62, tokenizer.bin_velocity(10), 1.08)


def tiny_model(tokenizer):
    torch.manual_seed(0)
    config = GPTConfig(block_size=64, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32)
    return GPT(config).eval()


RUNNERS = [
    pytest.param(
        "1", id="native", marks=pytest.mark.skipif(native.library() is None, reason="no native step")
    ),
    pytest.param("0", id="torch_step"),
]


@pytest.mark.parametrize("compiled", RUNNERS)
def test_stream_gives_the_batch_notes(tokenizer, compiled, monkeypatch):
    monkeypatch.setenv("PIANO_GPT_NATIVE", compiled)
    model, prompt = tiny_model(tokenizer), prompt_notes(3)
    options = dict(max_new_tokens=150, temperature=1.0, top_k=40, seed=5, max_note_seconds=0.5)
    chunks = list(stream(model, tokenizer, prompt, **options))
    (batch,) = generate_samples(model, tokenizer, prompt, **options)
    assert len(chunks) > 3 and len(batch.notes) > 10  # notes came out along the way
    pd.testing.assert_frame_equal(
        notes_table([n for c in chunks for n in c.itertuples(index=False)]), batch.notes
    )
    # And the batch call equals the decode of its ids (the path before streaming).
    offset = float(prompt["start"].min())
    prompt_ids = tokenizer.encode(_shift(prompt, -offset))
    pd.testing.assert_frame_equal(batch.notes, batch_notes(tokenizer, prompt_ids, batch.ids, offset, 0.5))
    # Several samples at once: each row as the sample of its seed alone.
    continuation = ContinuationStream(model, tokenizer, prompt, **{**options, "n_samples": 3})
    rows = {0: [], 1: [], 2: []}
    for streamed in continuation:
        rows[streamed.sample] += streamed.rows
    (second,) = generate_samples(model, tokenizer, prompt, **{**options, "seed": 6})
    pd.testing.assert_frame_equal(notes_table(rows[1]), second.notes)
    assert continuation.generations()[1].stop_reason == second.stop_reason


def test_a_stream_left_early_keeps_the_notes_so_far(tokenizer):
    model, prompt = tiny_model(tokenizer), prompt_notes(4)
    threads = torch.get_num_threads()
    continuation = ContinuationStream(model, tokenizer, prompt, max_new_tokens=200, seed=2, threads=1)
    given = []
    for streamed in continuation:
        given += streamed.rows
        if len(given) >= 5:
            break
    (generation,) = continuation.generations()
    assert torch.get_num_threads() == threads  # given back when the stream is left
    assert generation.stop_reason == STOP_INTERRUPTED
    offset = float(prompt["start"].min())
    prompt_ids = tokenizer.encode(_shift(prompt, -offset))
    expected = batch_notes(tokenizer, prompt_ids, generation.ids, offset, 10.0)
    pd.testing.assert_frame_equal(generation.notes, expected)
    assert set(given) <= set(map(tuple, generation.notes.itertuples(index=False)))


def test_ctrl_c_in_the_generate_command_writes_the_notes_so_far(tokenizer, tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from piano_gpt.commands.generate import run
    from piano_gpt.configs import CONFIG_DIR
    from piano_gpt.generation import FastRunner
    from piano_gpt.midi import read_metadata, read_notes, write_notes
    from piano_gpt.train.checkpoint import save_checkpoint

    model, prompt = tiny_model(tokenizer), prompt_notes(5)
    save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    write_notes(prompt, tmp_path / "in.mid")
    step, calls = FastRunner.step, []

    def interrupted_step(self, tokens, time_steps):  # Ctrl-C while the 61st token is computed
        calls.append(1)
        if len(calls) == 60:
            raise KeyboardInterrupt
        return step(self, tokens, time_steps)

    monkeypatch.setattr(FastRunner, "step", interrupted_step)
    cfg = OmegaConf.load(CONFIG_DIR / "generate.yaml")
    for key in ("defaults", "hydra"):
        cfg.pop(key)
    cfg = OmegaConf.merge(
        cfg,
        dict(checkpoint_path=str(tmp_path / "ckpt"), prompt_path=str(tmp_path / "in.mid"), seed=3,
             output_path=str(tmp_path / "out.mid"), max_new_tokens=500, memorisation="false"),
    )  # fmt: skip
    lines = run(cfg)
    assert lines[-1].startswith("interrupted (Ctrl-C): wrote the")
    monkeypatch.setattr(FastRunner, "step", step)
    meta = read_metadata(tmp_path / "out.mid")
    drawn = int(meta["generated_tokens"])  # ~60: the window slides (re-primes) without a step
    assert meta["stop_reason"] == STOP_INTERRUPTED and 55 < drawn < 500
    # The batch call stopped after as many tokens has the same notes.
    prompt = read_notes(tmp_path / "in.mid")  # the prompt as the command reads it (times on MIDI ticks)
    (expected,) = generate_samples(model, tokenizer, prompt, seed=3, max_new_tokens=drawn)
    written = read_notes(tmp_path / "out.mid")
    assert len(expected.notes) > 3 and len(written) == len(prompt) + len(expected.notes)
    np.testing.assert_array_equal(written["pitch"], expected.piece["pitch"])
    np.testing.assert_allclose(written["start"], expected.piece["start"], atol=2e-3)
    assert f"wrote the {len(expected.notes)} notes" in lines[-1]


def test_ctrl_c_where_nothing_can_be_kept_says_so_in_one_line(monkeypatch, capsys, tmp_path):
    from piano_gpt.commands import generate as command

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "run", interrupted)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["generate", "checkpoint_path=ckpt", "mode=task"])
    with pytest.raises(SystemExit) as exit:
        command.main()
    assert exit.value.code == 130
    assert capsys.readouterr().err.strip() == "interrupted (Ctrl-C): nothing written"


def test_note_stream_of_a_bpe_tokenizer_equals_its_decode(tokenizer):
    from piano_gpt.tokenizers import AwesomeMidiTokenizer

    pieces = [prompt_notes(seed, 30) for seed in range(6)]
    bpe = AwesomeMidiTokenizer.train(tokenizer, pieces, vocab_size=tokenizer.vocab_size + 40)
    tables = NoteTables(bpe)
    rng = np.random.default_rng(2)
    total = 0
    for trial in range(10):
        prompt = prompt_notes(100 + trial)
        offset = float(prompt["start"].min())
        prompt_ids = bpe.encode(_shift(prompt, -offset))
        ids = rng.integers(0, bpe.vocab_size, 80)  # any ids, merged ones among them
        notes_stream = NoteStream(tables, prompt_ids, offset, 10.0)
        for token in ids:
            notes_stream.feed(token)
        notes_stream.close()
        expected = batch_notes(bpe, prompt_ids, ids, offset, 10.0)
        pd.testing.assert_frame_equal(notes_table(notes_stream.done), expected)
        total += len(expected)
    assert total > 50
