import json

import numpy as np
import pandas as pd
import pytest

from piano_gpt.midi import make_notes, read_notes
from piano_gpt.tokenizers.awesome import (
    CHAR_OFFSET,
    AwesomeMidiTokenizer,
    base_ids_to_text,
    text_to_base_ids,
    tokenizer_config_hash,
    training_texts,
)
from piano_gpt.tokenizers.base import (
    CLS_TOKEN,
    EOGENAI_TOKEN,
    GENAI_TOKEN,
    load_tokenizer,
    tokenizer_from_dict,
)
from piano_gpt.tokenizers.exponential import ExponentialTimeTokenizer

N_TRAIN_FILES = 8
N_TEST_FILES = 4


def synthetic_notes(seed: int, n: int = 300) -> pd.DataFrame:
    """Repetitive, chord-heavy material: arpeggios of a few chords with jittered timing."""
    rng = np.random.default_rng(seed)
    chords = [(60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62)]
    pitch, velocity, start, end = [], [], [], []
    time = 0.0
    while len(pitch) < n:
        chord = chords[rng.integers(len(chords))]
        for p in chord:
            pitch.append(p + 12 * int(rng.integers(-1, 2)))
            velocity.append(int(rng.choice([60, 64, 80])))
            start.append(time)
            end.append(time + float(rng.choice([0.12, 0.25, 0.5])))
            time += float(rng.choice([0.0, 0.04, 0.08, 0.16]))
        time += 0.25
    return make_notes(pitch[:n], velocity[:n], start[:n], end[:n])


def small_base() -> ExponentialTimeTokenizer:
    return ExponentialTimeTokenizer(n_special_ids=16)


@pytest.fixture(scope="module")
def synthetic_tokenizer() -> AwesomeMidiTokenizer:
    corpus = [synthetic_notes(seed) for seed in range(20)]
    return AwesomeMidiTokenizer.train(small_base(), corpus, vocab_size=500, max_token_length=32)


@pytest.fixture(scope="module")
def maestro_pieces(maestro_validation_files) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    files = maestro_validation_files[: N_TRAIN_FILES + N_TEST_FILES]
    if len(files) < N_TRAIN_FILES + N_TEST_FILES:
        pytest.skip("too few MAESTRO validation files")
    notes = [read_notes(path) for path in files]
    return notes[:N_TRAIN_FILES], notes[N_TRAIN_FILES:]


@pytest.fixture(scope="module")
def maestro_tokenizer(maestro_pieces) -> AwesomeMidiTokenizer:
    train, _ = maestro_pieces
    return AwesomeMidiTokenizer.train(ExponentialTimeTokenizer(), train, vocab_size=2000)


# --- character mapping and training text ---------------------------------------------------------------


def test_text_mapping_round_trip():
    ids = np.array([0, 1, 5, 1240, 3])
    text = base_ids_to_text(ids)
    assert text[0] == chr(CHAR_OFFSET) and len(text) == 5
    assert text_to_base_ids(text).tolist() == ids.tolist()
    assert base_ids_to_text([]) == ""
    with pytest.raises(ValueError):
        base_ids_to_text([-1])


def test_training_texts_cut_at_specials_and_chunk():
    base = small_base()
    genai = base.token_to_id[GENAI_TOKEN]
    note_ids = base.encode(synthetic_notes(0, 40))
    ids = [base.pad_token_id, *note_ids, genai, *note_ids]
    chunks = list(training_texts(base, [ids], max_token_length=16))
    assert all(1 <= len(c) <= 16 for c in chunks)
    special_chars = {chr(CHAR_OFFSET + i) for i in [base.pad_token_id, genai]}
    assert not any(set(c) & special_chars for c in chunks)
    # Nothing but the special tokens is lost, and order is kept.
    assert "".join(chunks) == base_ids_to_text(note_ids) * 2


def test_training_accepts_records_texts_and_ids():
    base = small_base()
    notes = [synthetic_notes(seed) for seed in range(5)]
    records = [
        {
            "notes": {
                "pitch": n["pitch"].tolist(),
                "velocity": n["velocity"].tolist(),
                "start": n["start"].tolist(),
                "end": n["end"].tolist(),
            },
            "source": "{}",
        }
        for n in notes
    ]
    texts = [base_ids_to_text(base.encode(n)) for n in notes]
    ids = [base.encode(n) for n in notes]
    dicts = [
        AwesomeMidiTokenizer.train(base, items, vocab_size=400, max_token_length=32).to_dict()
        for items in (notes, records, texts, ids)
    ]
    assert all(d == dicts[0] for d in dicts[1:])


def test_vocab_size_below_base_is_an_error():
    base = small_base()
    with pytest.raises(ValueError, match="below the base vocabulary"):
        AwesomeMidiTokenizer.train(base, [synthetic_notes(0)], vocab_size=base.vocab_size - 1)


# --- synthetic corpus ------------------------------------------------------------------------------------


def test_synthetic_round_trip_and_compression(synthetic_tokenizer):
    awesome = synthetic_tokenizer
    base = awesome.base
    assert awesome.name == "awesome" and awesome.vocab_size == 500
    for seed in (100, 101, 102):  # unseen pieces
        notes = synthetic_notes(seed)
        base_ids = base.encode(notes)
        ids = awesome.encode(notes)
        assert max(ids) < awesome.vocab_size
        assert awesome.decode_to_base_ids(ids).tolist() == base_ids
        pd.testing.assert_frame_equal(awesome.decode(ids), base.decode(base_ids))
        assert len(ids) < 0.8 * len(base_ids)


def test_empty_and_invalid(synthetic_tokenizer):
    awesome = synthetic_tokenizer
    assert awesome.encode_base_ids([]) == []
    assert awesome.decode([]).empty
    assert awesome.decode_to_base_ids([-1, awesome.vocab_size]).tolist() == []
    with pytest.raises(ValueError):
        awesome.encode_base_ids([awesome.base.vocab_size])


def test_every_base_token_has_its_own_id(synthetic_tokenizer):
    awesome = synthetic_tokenizer
    base = awesome.base
    for token, base_id in base.token_to_id.items():
        awesome_id = awesome.token_to_id[token]
        assert awesome.token_base_ids(awesome_id) == [base_id]
        assert awesome.encode_base_ids([base_id]) == [awesome_id]


def test_special_tokens_never_merged(synthetic_tokenizer):
    awesome = synthetic_tokenizer
    base = awesome.base
    genai, eogenai = base.token_to_id[GENAI_TOKEN], base.token_to_id[EOGENAI_TOKEN]
    atomic = set(base.special_token_ids().tolist()) | {base.pad_token_id, base.token_to_id[CLS_TOKEN]}
    # No token of the vocabulary contains a special base token together with anything else.
    for awesome_id in range(awesome.vocab_size):
        pieces = awesome.token_base_ids(awesome_id)
        if len(pieces) > 1:
            assert not set(pieces) & atomic
    # A <GENAI> between very frequent material stays a token of its own.
    source = base.encode(synthetic_notes(1))
    target = base.encode(synthetic_notes(2))
    sequence = [base.pad_token_id, *source, genai, *target, eogenai, base.pad_token_id]
    ids = awesome.encode_base_ids(sequence)
    genai_positions = [i for i, t in enumerate(ids) if awesome.token_base_ids(t) == [genai]]
    assert len(genai_positions) == 1
    assert ids[genai_positions[0]] == awesome.token_to_id[GENAI_TOKEN]
    assert awesome.decode_to_base_ids(ids[: genai_positions[0]]).tolist() == [base.pad_token_id, *source]
    assert awesome.token_base_ids(ids[-2]) == [eogenai] and ids[-1] == awesome.pad_token_id
    assert set(awesome.special_token_ids().tolist()) >= {awesome.token_to_id[GENAI_TOKEN]}


def test_token_time_units_and_music_time(synthetic_tokenizer):
    awesome = synthetic_tokenizer
    base = awesome.base
    units = awesome.token_time_units()
    assert units.shape == (awesome.vocab_size,)
    for awesome_id in range(awesome.vocab_size):
        pieces = awesome.token_base_ids(awesome_id)
        assert units[awesome_id] == base.token_time_units()[pieces].sum()
    notes = synthetic_notes(5)
    ids = awesome.encode(notes)
    base_ids = base.encode(notes)
    assert awesome.music_time(ids)[-1] == base.music_time(base_ids)[-1]
    assert awesome.time_unit == base.time_unit


def test_add_special_tokens_after_training(synthetic_tokenizer, tmp_path):
    awesome = AwesomeMidiTokenizer.from_dict(synthetic_tokenizer.to_dict())
    size = awesome.vocab_size
    ids = awesome.add_special_tokens(["<TASK_A>", "<COMPOSER_B>", GENAI_TOKEN])
    assert awesome.vocab_size == size
    assert ids[2] == awesome.token_to_id[GENAI_TOKEN]
    assert awesome.add_special_tokens(["<TASK_A>"]) == ids[:1]  # idempotent
    for token, awesome_id in zip(["<TASK_A>", "<COMPOSER_B>"], ids[:2], strict=True):
        assert awesome.vocab[awesome_id] == token
        assert awesome.token_base_ids(awesome_id) == [awesome.base.token_to_id[token]]
        assert awesome_id in awesome.special_token_ids()
    notes = synthetic_notes(3)
    base_ids = awesome.base.encode(notes)
    sequence = [awesome.base.token_to_id["<TASK_A>"], *base_ids]
    encoded = awesome.encode_base_ids(sequence)
    assert encoded[0] == ids[0]
    assert awesome.decode_to_base_ids(encoded).tolist() == sequence
    # Saved and loaded, the added tokens are still there.
    loaded = load_tokenizer(awesome.save(tmp_path / "awesome.json"))
    assert loaded.token_to_id["<TASK_A>"] == ids[0] and loaded == awesome
    # A merged token's name cannot become a special token.
    merged_name = next(name for name in awesome.vocab if " " in name)
    with pytest.raises(ValueError, match="merged"):
        awesome.add_special_tokens([merged_name])


def test_save_load_round_trip(synthetic_tokenizer, tmp_path):
    path = synthetic_tokenizer.save(tmp_path / "tok" / "awesome.json")
    data = json.loads(path.read_text())
    assert data["name"] == "awesome" and data["base"]["name"] == "exponential"
    loaded = load_tokenizer(path)
    assert isinstance(loaded, AwesomeMidiTokenizer)
    assert loaded == synthetic_tokenizer
    assert loaded.vocab == synthetic_tokenizer.vocab
    assert tokenizer_from_dict(data).to_dict() == synthetic_tokenizer.to_dict()
    notes = synthetic_notes(7)
    assert loaded.encode(notes) == synthetic_tokenizer.encode(notes)
    np.testing.assert_array_equal(loaded.token_time_units(), synthetic_tokenizer.token_time_units())


def test_training_is_deterministic():
    corpus = [synthetic_notes(seed) for seed in range(10)]
    first = AwesomeMidiTokenizer.train(small_base(), corpus, vocab_size=450, max_token_length=32)
    second = AwesomeMidiTokenizer.train(small_base(), iter(corpus), vocab_size=450, max_token_length=32)
    assert first.hf_tokenizer.to_str() == second.hf_tokenizer.to_str()
    assert json.dumps(first.to_dict()) == json.dumps(second.to_dict())
    other = AwesomeMidiTokenizer.train(small_base(), corpus, vocab_size=450, max_token_length=8)
    assert other.hf_tokenizer.to_str() != first.hf_tokenizer.to_str()
    assert max(len(other.token_base_ids(i)) for i in range(other.vocab_size)) <= 8


# --- MAESTRO ---------------------------------------------------------------------------------------------


def test_maestro_round_trip_on_unseen_pieces(maestro_tokenizer, maestro_pieces):
    awesome = maestro_tokenizer
    base = awesome.base
    _, test = maestro_pieces
    for notes in test:
        base_ids = base.encode(notes)
        ids = awesome.encode(notes)
        assert awesome.decode_to_base_ids(ids).tolist() == base_ids
        pd.testing.assert_frame_equal(awesome.decode(ids), base.decode(base_ids))


def test_maestro_fewer_tokens_per_note(maestro_tokenizer, maestro_pieces):
    awesome = maestro_tokenizer
    _, test = maestro_pieces
    n_notes = sum(len(notes) for notes in test)
    base_per_note = sum(len(awesome.base.encode(notes)) for notes in test) / n_notes
    awesome_per_note = sum(len(awesome.encode(notes)) for notes in test) / n_notes
    assert awesome.vocab_size == 2000
    assert awesome_per_note < 0.8 * base_per_note, (base_per_note, awesome_per_note)


# --- config hash -----------------------------------------------------------------------------------------


def test_tokenizer_config_hash():
    dataset = {"type": "maestro", "path": "../shared/data/maestro", "augmentation": {"max_pitch_shift": 5}}
    tokenizer = {"name": "awesome", "vocab_size": 10000, "max_token_length": 128}
    digest = tokenizer_config_hash(dataset, tokenizer)
    assert len(digest) == 12 and all(c in "0123456789abcdef" for c in digest)
    # Stable: key order and sequence type do not matter, and the value is fixed across runs.
    reordered = {"augmentation": {"max_pitch_shift": 5}, "path": "../shared/data/maestro", "type": "maestro"}
    assert tokenizer_config_hash(reordered, dict(reversed(tokenizer.items()))) == digest
    assert tokenizer_config_hash({"a": (1, 2)}, {}) == tokenizer_config_hash({"a": [1, 2]}, {})
    assert digest == tokenizer_config_hash(json.loads(json.dumps(dataset)), tokenizer)
    # Changes in either config change it.
    assert tokenizer_config_hash(dataset, {**tokenizer, "vocab_size": 5000}) != digest
    assert tokenizer_config_hash({**dataset, "path": "other"}, tokenizer) != digest
    assert tokenizer_config_hash(tokenizer, dataset) != digest
