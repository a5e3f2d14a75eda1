import numpy as np
import pandas as pd
import pytest

from piano_gpt.midi import make_notes, read_notes
from piano_gpt.tokenizers import ExponentialTimeTokenizer, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return ExponentialTimeTokenizer()


def test_vocabulary_layout(tokenizer):
    vocab = tokenizer.vocab
    assert vocab[:4] == ["<PAD>", "<CLS>", "NOTE_ON_21", "NOTE_OFF_21"]
    assert vocab[2 + 176 : 2 + 176 + 32] == [f"VELOCITY_{b}" for b in range(32)]
    assert vocab[210:217] == ["1T", "2T", "4T", "8T", "16T", "32T", "64T"]
    assert tokenizer.vocab_size == 217 + 1024
    assert vocab[217:219] == ["<GENAI>", "<EOGENAI>"]


def test_hand_encoded_sequence(tokenizer):
    # C4 at 0.00-0.13 s (velocity 80 -> bin 20), E4 at 0.05-0.80 s (velocity 3 -> bin 0).
    notes = make_notes([60, 64], [80, 3], [0.0, 0.05], [0.13, 0.80])
    tokens = tokenizer.decode_tokens(tokenizer.encode(notes))
    assert tokens == [
        "VELOCITY_20", "NOTE_ON_60",
        "4T", "1T", "VELOCITY_0", "NOTE_ON_64",
        "8T", "NOTE_OFF_60",
        "64T", "2T", "1T", "NOTE_OFF_64",  # 67 units = 64 + 2 + 1
    ]  # fmt: skip


def test_off_before_on_at_equal_time_and_greedy_long_gaps(tokenizer):
    notes = make_notes([60, 60], [64, 64], [0.0, 1.0], [1.0, 4.0])
    tokens = tokenizer.decode_tokens(tokenizer.encode(notes))
    assert tokens[2:6] == ["64T", "32T", "4T", "NOTE_OFF_60"]  # 100 units = 64 + 32 + 4
    assert tokens[6:8] == ["VELOCITY_16", "NOTE_ON_60"]
    assert tokens.count("64T") == 1 + 4  # 300 units = 4 x 64 + 32 + 8 + 4


def test_zero_length_note_gets_one_unit(tokenizer):
    decoded = tokenizer.decode(tokenizer.encode(make_notes([60], [64], [0.5], [0.5])))
    assert decoded["end"].iloc[0] - decoded["start"].iloc[0] == pytest.approx(0.01)


def test_decode_drops_orphans_and_closes_dangling(tokenizer):
    ids = tokenizer.ids_of(["NOTE_OFF_61", "VELOCITY_10", "NOTE_ON_60", "8T", "<GENAI>", "4T"])
    notes = tokenizer.decode(ids)
    assert list(notes["pitch"]) == [60]
    assert notes["end"].iloc[0] == pytest.approx(0.12)
    assert notes["velocity"].iloc[0] == 42  # bin 10 midpoint


def test_round_trip_maestro_validation(tokenizer, maestro_validation_files):
    for path in maestro_validation_files[:6]:
        notes = read_notes(path)
        decoded = tokenizer.decode(tokenizer.encode(notes))
        assert sorted(decoded["pitch"]) == sorted(notes["pitch"]), path
        a = notes.sort_values(["pitch", "start"]).reset_index(drop=True)
        b = decoded.sort_values(["pitch", "start"]).reset_index(drop=True)
        assert np.abs(a["start"] - b["start"]).max() <= 0.005 + 1e-9
        long_enough = (a["end"] - a["start"]) >= 0.015
        assert np.abs(a["end"] - b["end"])[long_enough].max() <= 0.005 + 1e-9
        assert np.abs(a["velocity"] - b["velocity"]).max() <= 2  # half of a 4-wide bin


def test_save_load_keeps_special_tokens(tokenizer, tmp_path):
    tok = ExponentialTimeTokenizer()
    ids = tok.add_special_tokens(["<COMPOSER_BACH>", "<TASK_X>"])
    assert ids == [219, 220]
    assert tok.vocab_size == 1241
    loaded = load_tokenizer(tok.save(tmp_path / "t.json"))
    assert loaded == tok
    assert loaded.token_to_id["<TASK_X>"] == 220
    assert tok.add_special_tokens(["<TASK_X>"]) == [220]


def test_music_time_restarts_after_genai(tokenizer):
    ids = tokenizer.ids_of(["4T", "NOTE_ON_60", "2T", "<GENAI>", "1T", "NOTE_ON_60"])
    genai = tokenizer.token_to_id["<GENAI>"]
    assert list(tokenizer.music_time(ids, reset_token_id=genai)) == [4, 4, 6, 0, 1, 1]
    assert list(tokenizer.music_time(ids, max_steps=5)) == [4, 4, 4, 4, 4, 4]


def _random_table(rng, n, scale, ties=False, sort=False):
    start = rng.random(n) * scale * n
    if ties:
        start = np.round(start / 0.005) * 0.005  # halfway between time units: round half to even
    if sort:
        start = np.sort(start)
    duration = rng.exponential(scale / 2, n) * (rng.random(n) > 0.1)  # some zero-length notes
    return pd.DataFrame(
        {
            "pitch": rng.integers(21, 109, n),
            "velocity": rng.integers(-3, 140, n),
            "start": start - (rng.random(n) < 0.05),  # some negative times
            "end": start + duration,
        }
    )


@pytest.mark.parametrize(
    "config",
    [{}, {"max_time_step": 0.5, "n_velocity_bins": 7}, {"max_time_step": 0.015, "n_velocity_bins": 1}],
)
def test_fast_encode_matches_general_path(config):
    """The packed fast path and the general numpy path give the same ids (ties, long gaps, chords,
    unsorted tables, zero-length notes, negative times, velocities outside 0..127, other dtypes)."""
    tok = ExponentialTimeTokenizer(**config)
    rng = np.random.default_rng(0)
    tables = [_random_table(rng, int(rng.integers(1, 300)), s, ties=k % 2 == 0, sort=k % 3 == 0)
              for k, s in enumerate([0.001, 0.01, 0.1, 1.0, 10.0, 300.0] * 8)]  # fmt: skip
    chord = make_notes([60, 64, 67, 60, 60], [10, 50, 90, 100, 127], [1.0] * 5, [2.0, 2.0, 1.0, 1.0, 3.0])
    tables += [chord, chord.iloc[::-1], chord.astype({"pitch": np.int8, "velocity": np.uint8})]
    tables += [chord.astype({"start": np.float32, "end": np.float32, "velocity": np.float64})]
    tables += [chord[["end", "velocity", "start", "pitch"]].assign(other=1)]  # column order
    for notes in tables:
        packed = tok._encode_packed(notes)
        assert packed is not None
        expected = tok._encode_array_general(notes)
        assert list(packed) == expected.tolist() == tok.encode(notes)
        array = tok.encode_array(notes)
        assert array.dtype == np.int64 and np.array_equal(array, expected)


def test_fast_encode_of_read_notes_tables(tokenizer, maestro_validation_files):
    for path in maestro_validation_files[:3]:
        notes = read_notes(path)
        assert tokenizer._encode_packed(notes) is not None
        assert tokenizer.encode(notes) == tokenizer._encode_array_general(notes).tolist()


def test_encode_general_path_cases(tokenizer):
    notes = make_notes([20, 60, 109, 64], [10, 20, 30, 40], [0.0, 0.5, 1.0, 2.0], [1.0, 1.5, 2.0, 3.0])
    assert tokenizer._encode_packed(notes) is None  # pitches to drop
    assert tokenizer.encode(notes) == tokenizer.encode(notes[notes["pitch"].between(21, 108)])
    assert tokenizer.encode(notes.iloc[:0]) == [] and tokenizer.encode_array(notes.iloc[:0]).dtype == np.int64
    nullable = notes.iloc[1:2].astype({"pitch": "Int64"})  # an extension dtype
    assert tokenizer._encode_packed(nullable) is None
    assert tokenizer.encode(nullable) == tokenizer.encode(notes.iloc[1:2])
    wide = ExponentialTimeTokenizer(n_velocity_bins=128)  # ids above 255: general path only
    assert wide._packed is None
    assert list(wide.decode(wide.encode(notes))["pitch"]) == [60, 64]
