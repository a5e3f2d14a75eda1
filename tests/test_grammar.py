"""The note grammar of generation: random weights never break it (generation/grammar.py)."""

import pytest
import torch

from piano_gpt.generation import generate_samples, sample_ids
from piano_gpt.generation.engine import token_tables
from piano_gpt.generation.grammar import NoteGrammar, grammar_support
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
    assert mask.nonzero().flatten().tolist() == [int(tokenizer.note_off_ids[0])]


def test_bpe_tokenizers_say_the_grammar_is_off(tokenizer):
    text = base_ids_to_text(tokenizer.encode(make_notes([60, 62], [80, 80], [0, 0.5], [0.4, 1])))
    bpe = AwesomeMidiTokenizer.train(tokenizer, [text] * 4, vocab_size=tokenizer.vocab_size + 8)
    assert "exponential" in grammar_support(bpe)
    assert grammar_support(tokenizer) is None
