"""The note grammar of generation: random weights never break it (generation/grammar.py)."""

import numpy as np
import pandas as pd
import pytest
import torch

from piano_gpt.generation import generate_samples, sample_ids
from piano_gpt.generation.engine import carried_window, token_tables
from piano_gpt.generation.grammar import NoteGrammar, grammar_support, held_note_tokens, open_notes
from piano_gpt.midi import make_notes
from piano_gpt.model import GPT, GPTConfig
from piano_gpt.tokenizers import ExponentialTimeTokenizer
from piano_gpt.tokenizers.awesome import AwesomeMidiTokenizer, base_ids_to_text


@pytest.fixture(scope="module")
def tokenizer():
    return ExponentialTimeTokenizer()


def random_model(tokenizer, seed: int, block_size: int = 128) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(block_size=block_size, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32)
    return GPT(config).eval()


def violations(tokenizer, ids, limit_units: int | None) -> list[str]:
    """Every break of the grammar in a token stream, by an independent scan."""
    kind = {int(i): "on" for i in tokenizer.note_on_ids}
    kind.update({int(i): "off" for i in tokenizer.note_off_ids})
    kind.update({int(i): "velocity" for i in tokenizer.velocity_ids})
    units = tokenizer.token_time_units()
    pitch_of = {int(i): p for p, i in enumerate(tokenizer.note_on_ids)}
    pitch_of.update({int(i): p for p, i in enumerate(tokenizer.note_off_ids)})
    sounding, clock, after_velocity, problems = {}, 0, False, []
    for position, token in enumerate(int(t) for t in ids):
        what = kind.get(token)
        if after_velocity and what != "on":
            problems.append(f"{position}: velocity not followed by a NOTE_ON")
        if what == "on":
            if not after_velocity:
                problems.append(f"{position}: NOTE_ON without a velocity")
            if pitch_of[token] in sounding:
                problems.append(f"{position}: NOTE_ON of a sounding pitch")
            sounding[pitch_of[token]] = clock
        elif what == "off":
            if pitch_of[token] not in sounding:
                problems.append(f"{position}: orphan NOTE_OFF")
            sounding.pop(pitch_of[token], None)
        clock += int(units[token])
        if limit_units is not None and any(clock - start > limit_units for start in sounding.values()):
            problems.append(f"{position}: a note held past the limit")
        after_velocity = what == "velocity"
    return problems


@pytest.mark.parametrize("seed", range(4))
def test_random_weights_never_break_the_grammar(tokenizer, seed):
    model = random_model(tokenizer, seed)
    samples = sample_ids(
        model,
        tokenizer,
        [tokenizer.velocity_ids[10]],
        n_samples=3,
        seed=seed,
        max_new_tokens=300,
        max_note_seconds=0.5,
    )
    limit = 50  # 0.5 s in 10 ms units
    prompt = [int(tokenizer.velocity_ids[10])]
    for sample in samples:
        assert violations(tokenizer, prompt + sample.ids.tolist(), limit) == []
        assert len(sample.ids) == 300


def test_without_the_grammar_random_weights_do_break_it(tokenizer):
    """The check above can fail: the same model, grammar off, writes orphans and bare notes."""
    model = random_model(tokenizer, 0)
    (sample,) = sample_ids(model, tokenizer, [tokenizer.velocity_ids[10]], max_new_tokens=300, grammar=False)
    assert violations(tokenizer, [int(tokenizer.velocity_ids[10])] + sample.ids.tolist(), None)


def test_decoded_notes_respect_the_limit(tokenizer):
    model = random_model(tokenizer, 1)
    prompt = make_notes([60, 64, 67], [80, 80, 80], [0.0, 0.1, 0.2], [0.5, 0.6, 3.0])
    (generation,) = generate_samples(
        model, tokenizer, prompt, max_new_tokens=400, max_note_seconds=0.3, seed=3
    )
    durations = (generation.notes["end"] - generation.notes["start"]).to_numpy()
    assert len(durations) > 0 and durations.max() <= 0.3 + 1e-9


def test_prompt_state_carries_into_generation(tokenizer):
    """A note sounding at the end of the prompt may be ended; one that is not, may not."""
    prompt = tokenizer.encode(make_notes([60], [80], [0.0], [5.0]))
    on_index = list(prompt).index(int(tokenizer.note_on_ids[60 - 21]))
    before_off = prompt[: on_index + 1]  # the note is on, its NOTE_OFF not yet written
    allowed = token_tables(tokenizer).music
    grammar = NoteGrammar(tokenizer, 1, allowed, max_note_seconds=None)
    grammar.start(before_off)
    mask = grammar.allowed()[0]
    assert bool(mask[tokenizer.note_off_ids[60 - 21]])
    assert not bool(mask[tokenizer.note_off_ids[61 - 21]])
    assert not mask[tokenizer.note_on_ids].any()  # a NOTE_ON needs a velocity first
    grammar.advance([tokenizer.velocity_ids[3]])
    mask = grammar.allowed()[0]
    assert mask.sum() == 87 and not bool(mask[tokenizer.note_on_ids[60 - 21]])  # not the sounding key


def test_limit_allows_only_time_that_fits(tokenizer):
    allowed = token_tables(tokenizer).music
    grammar = NoteGrammar(tokenizer, 1, allowed, max_note_seconds=0.2)  # 20 units
    grammar.start([tokenizer.velocity_ids[3], tokenizer.note_on_ids[0], tokenizer.token_to_id["16T"]])
    mask = grammar.allowed()[0]
    steps = {int(s): bool(mask[tokenizer.token_to_id[f"{s}T"]]) for s in tokenizer.time_steps}
    assert steps == {1: True, 2: True, 4: True, 8: False, 16: False, 32: False, 64: False}
    grammar.advance([tokenizer.token_to_id["4T"]])
    mask = grammar.allowed()[0]
    assert np.flatnonzero(mask).tolist() == [int(tokenizer.note_off_ids[0])]


def test_bpe_tokenizers_say_the_grammar_is_off(tokenizer):
    text = base_ids_to_text(tokenizer.encode(make_notes([60, 62], [80, 80], [0, 0.5], [0.4, 1])))
    bpe = AwesomeMidiTokenizer.train(tokenizer, [text] * 4, vocab_size=tokenizer.vocab_size + 8)
    assert "exponential" in grammar_support(bpe)
    assert grammar_support(tokenizer) is None


def test_held_note_tokens_restate_only_the_notes_still_down(tokenizer):
    # C4 (held from the start), E4 (ended), G4 (struck late, still held): C4 and G4 remain, oldest first.
    notes = make_notes([60, 64, 67], [80, 50, 100], [0.0, 0.2, 0.5], [3.0, 0.4, 3.0])
    ids = tokenizer.encode(notes)
    cut = ids.index(int(tokenizer.note_on_ids[67 - 21])) + 1  # just after G4 starts
    held = held_note_tokens(tokenizer, ids[:cut])
    pairs = [tokenizer.vocab[i] for i in held]
    assert pairs == ["VELOCITY_" + pairs[0].split("_")[1], "NOTE_ON_60", pairs[2], "NOTE_ON_67"]
    assert held[0] == ids[ids.index(int(tokenizer.note_on_ids[60 - 21])) - 1]  # C4's own velocity
    assert open_notes(tokenizer, ids[:cut]) == 2
    assert open_notes(tokenizer, ids) == 0 and len(held_note_tokens(tokenizer, ids)) == 0


def test_a_slid_window_starts_with_the_held_notes_and_keeps_its_size(tokenizer):
    held_long = make_notes([40], [90], [0.0], [30.0])  # one key down through many short notes
    runs = make_notes(
        [60 + i % 12 for i in range(120)],
        [70] * 120,
        [0.1 + 0.2 * i for i in range(120)],
        [0.25 + 0.2 * i for i in range(120)],
    )
    ids = torch.as_tensor(tokenizer.encode(pd.concat([held_long, runs], ignore_index=True)))
    window = carried_window(ids, n_prefix=0, keep=64, tokenizer=tokenizer)
    assert len(window) == 64
    names = [tokenizer.vocab[int(i)] for i in window]
    n_held = next(i for i in range(0, 64, 2) if not names[i].startswith("VELOCITY"))
    assert 2 <= n_held <= 4 and names[1] == "NOTE_ON_40"  # the bass key, and a run note the cut splits
    assert all(n.startswith("NOTE_ON") for n in names[1:n_held:2])
    assert torch.equal(window[n_held:], ids[len(ids) - (64 - n_held) :])
    assert len(carried_window(ids[: len(ids) // 2], 0, 64, tokenizer)) == 64


def test_sliding_continuations_end_the_notes_they_restated(tokenizer):
    # A random model far past its 64-token window, with and without restating held notes: the grammar
    # holds in both, and the window never exceeds the context.
    model = random_model(tokenizer, 0, block_size=64)
    prompt = tokenizer.encode(make_notes([40, 60], [90, 70], [0.0, 0.1], [9.0, 0.3]))
    for carry in (True, False):
        (sample,) = sample_ids(model, tokenizer, prompt, max_new_tokens=400, seed=1, carry_held_notes=carry)
        assert violations(tokenizer, list(prompt) + sample.ids.tolist(), limit_units=1000) == []
