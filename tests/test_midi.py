import numpy as np
import pandas as pd
import pytest
import symusic
from hypothesis import given, settings
from hypothesis import strategies as st
from midi_fabric import vlq

from piano_gpt.midi import (
    MAX_TICKS,
    MidiReadError,
    allowed_pitch_shifts,
    augment,
    clip_same_pitch_overlaps,
    fold_sustain,
    longest_track_ticks,
    make_notes,
    pedal_intervals,
    read_metadata,
    read_notes,
    score_to_notes,
    tick_bound,
    write_notes,
)


def write_score(path, notes, pedal=()):
    """A one-track MIDI file with ``notes`` [(pitch, velocity, start, end)] and CC64 [(time, value)]."""
    score = symusic.Score(480, ttype="second")
    track = symusic.Track("piano", program=0, ttype="second")
    for pitch, velocity, start, end in notes:
        track.notes.append(symusic.Note(start, end - start, pitch, velocity, "second"))
    for time, value in pedal:
        track.controls.append(symusic.ControlChange(time, 64, value, "second"))
    score.tracks.append(track)
    score.dump_midi(str(path))
    return path


def test_round_trip_exact(tmp_path):
    notes = make_notes([60, 64, 67, 72], [80, 70, 60, 100], [0.0, 0.5, 0.5, 1.25], [0.5, 1.0, 2.0, 1.5])
    path = write_notes(notes, tmp_path / "a.mid")
    back = read_notes(path, sustain=False)
    pd.testing.assert_frame_equal(back, notes, atol=1e-3, check_exact=False)


def test_round_trip_maestro_file(maestro_validation_files, tmp_path):
    notes = read_notes(maestro_validation_files[0])
    back = read_notes(write_notes(notes, tmp_path / "m.mid"), sustain=False)
    assert len(back) == len(notes)
    assert (back["pitch"].to_numpy() == notes["pitch"].to_numpy()).all()
    assert np.abs(back["start"] - notes["start"]).max() < 2e-3
    assert np.abs(back["end"] - notes["end"]).max() < 2e-3


def test_sustain_extends_to_pedal_release(tmp_path):
    # Note released at 1.0 while the pedal (down at 0.5) is held until 3.0: it rings to 3.0.
    path = write_score(tmp_path / "p.mid", [(60, 80, 0.0, 1.0)], pedal=[(0.5, 127), (3.0, 0)])
    notes = read_notes(path)
    assert notes["end"].iloc[0] == pytest.approx(3.0, abs=2e-3)


def test_plain_127_0_pedal_is_not_zero_length(tmp_path):
    # The reference's bug: a 127/0 pedal became a zero-length interval. Here it sustains.
    path = write_score(tmp_path / "p.mid", [(60, 80, 0.0, 0.2)], pedal=[(0.1, 127), (2.0, 0)])
    assert read_notes(path)["end"].iloc[0] == pytest.approx(2.0, abs=2e-3)
    assert read_notes(path, sustain=False)["end"].iloc[0] == pytest.approx(0.2, abs=2e-3)


def test_sustain_stops_at_restrike_of_same_pitch(tmp_path):
    notes = [(60, 80, 0.0, 0.5), (60, 90, 1.5, 2.0), (64, 70, 0.0, 0.5)]
    path = write_score(tmp_path / "p.mid", notes, pedal=[(0.2, 100), (3.0, 10)])
    out = read_notes(path)
    c4 = out[out["pitch"] == 60].reset_index(drop=True)
    assert c4["end"].iloc[0] == pytest.approx(1.5, abs=2e-3)  # cut by the re-strike
    assert c4["end"].iloc[1] == pytest.approx(3.0, abs=2e-3)  # rings to the release
    assert out[out["pitch"] == 64]["end"].iloc[0] == pytest.approx(3.0, abs=2e-3)


def test_note_released_after_pedal_up_is_unchanged(tmp_path):
    path = write_score(tmp_path / "p.mid", [(60, 80, 0.0, 2.0)], pedal=[(0.1, 127), (1.0, 0)])
    assert read_notes(path)["end"].iloc[0] == pytest.approx(2.0, abs=2e-3)


def test_repeated_down_values_are_one_press(tmp_path):
    # 100 then 120 (both down) then 30 (up): one interval 0.1..2.5.
    path = write_score(tmp_path / "p.mid", [(60, 80, 0.0, 0.5)], pedal=[(0.1, 100), (0.3, 120), (2.5, 30)])
    assert read_notes(path)["end"].iloc[0] == pytest.approx(2.5, abs=2e-3)


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "empty file"),
        (b"hello world, not midi", "not a MIDI file"),
        (b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x10\x00\x00\x90", "malformed MIDI"),
    ],
)
def test_bad_input_names_file_and_problem(tmp_path, content, problem):
    path = tmp_path / "bad.mid"
    path.write_bytes(content)
    with pytest.raises(MidiReadError) as error:
        read_notes(path)
    assert str(path) in str(error.value)
    assert problem in str(error.value)


def test_file_without_notes(tmp_path):
    path = write_score(tmp_path / "empty.mid", [], pedal=[(0.0, 127)])
    with pytest.raises(MidiReadError, match="no notes"):
        read_notes(path)


def test_missing_file(tmp_path):
    with pytest.raises(MidiReadError, match="cannot open"):
        read_notes(tmp_path / "nope.mid")


def test_metadata_round_trip(tmp_path):
    notes = make_notes([60], [80], [0.0], [1.0])
    path = write_notes(notes, tmp_path / "g.mid", {"seed": 7, "temperature": 0.9})
    assert read_metadata(path) == {"seed": "7", "temperature": "0.9"}


def test_augmentation_keeps_range_and_scales_time():
    notes = make_notes([22, 60, 105], [80, 80, 80], [0.0, 1.0, 2.0], [0.5, 1.5, 3.0])
    assert list(allowed_pitch_shifts(notes, 5)) == [-1, 0, 1, 2, 3]
    rng = np.random.default_rng(0)
    for _ in range(50):
        out = augment(notes, rng, max_pitch_shift=5, speed_change_factors=[0.5, 2.0])
        assert out["pitch"].between(21, 108).all()
        factor = notes["end"].iloc[2] / out["end"].iloc[2]
        assert factor in (pytest.approx(1.0), pytest.approx(0.5), pytest.approx(2.0))
        np.testing.assert_allclose(out["start"] * factor, notes["start"])


# --- the fast paths of read_notes -----------------------------------------------------------------


def one_track_file(body: bytes, division: int = 480) -> bytes:
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
    return header + division.to_bytes(2, "big") + b"MTrk" + len(body).to_bytes(4, "big") + body


def byte_sum_bound(data: bytes) -> int | None:
    """tick_bound by its definition, byte by byte: sum of (byte & 0x7F) * 128**d, d the distance to
    the next byte < 0x80 (past the end counts as one); None when some d >= 4."""
    total = 0
    for k, byte in enumerate(data):
        d = 0
        while k + d < len(data) and data[k + d] >= 0x80:
            d += 1
        if d >= 4:
            return None
        total += (byte & 0x7F) * 128**d
    return total


# Bytes with long runs >= 0x80 (multi-byte quantities) as well as plain ones.
midi_like_bytes = st.lists(
    st.one_of(st.integers(0, 255), st.integers(0x80, 0xFF), st.sampled_from([0x00, 0x7F, 0x90, 0xFF])),
    max_size=300,
).map(bytes)


@settings(max_examples=300, deadline=None)
@given(body=midi_like_bytes)
def test_tick_bound_is_the_byte_sum_and_bounds_the_exact_walk(body):
    data = one_track_file(body)
    bound = tick_bound(data)
    assert bound == byte_sum_bound(data)
    if bound is not None:
        assert bound >= longest_track_ticks(data)


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.one_of(st.integers(0, 200), st.integers(0, 2**28 - 1), st.integers(0, 2**35)),
            st.sampled_from(
                [b"\x90\x3c\x40", b"\x3c\x00", b"\xff\x01\x00", b"\xff\x01\x02\xc3\xa9", b"\xc0\x05"]
            ),
        ),
        max_size=20,
    ),
    cut=st.integers(0, 400),
)
def test_tick_bound_bounds_long_and_truncated_delta_times(events, cut):
    body = b"".join(vlq(delta) + event for delta, event in events)
    data = one_track_file(body[: len(body) - cut % (len(body) + 1)])
    bound = tick_bound(data)
    assert bound is None or bound >= longest_track_ticks(data)


def spy_on_walk(monkeypatch) -> list[int]:
    """Count read_notes' calls of the exact tick walk."""
    import piano_gpt.midi as midi

    calls, walk = [], midi.longest_track_ticks
    monkeypatch.setattr(midi, "longest_track_ticks", lambda data: calls.append(1) or walk(data))
    return calls


def test_normal_files_skip_the_exact_walk(monkeypatch, tmp_path, maestro_validation_files):
    calls = spy_on_walk(monkeypatch)
    path = write_score(
        tmp_path / "p.mid", [(60, 80, 0.0, 1.0), (64, 70, 0.5, 2.0)], pedal=[(0.5, 127), (3.0, 0)]
    )
    assert len(read_notes(path)) == 2
    assert tick_bound(path.read_bytes()) <= MAX_TICKS
    assert len(read_notes(maestro_validation_files[0])) > 1000
    assert calls == []


def test_exact_walk_when_an_overflow_is_possible(monkeypatch, tmp_path):
    calls = spy_on_walk(monkeypatch)
    note = b"\x00\x90\x3c\x40" + vlq(480) + b"\x80\x3c\x40"
    # Long pauses after the note (empty text events): 2**31 - 1000 ticks in all, countable, but the
    # byte bound exceeds MAX_TICKS: read by the exact walk.
    pause = 7 * (2**28 - 1)
    rest = 2**31 - 1000 - 480 - pause
    body = note + (vlq(2**28 - 1) + b"\xff\x01\x00") * 7 + vlq(rest) + b"\xff\x01\x00" + b"\x00\xff\x2f\x00"
    data = one_track_file(body)
    assert longest_track_ticks(data) == 2**31 - 1000 <= MAX_TICKS < tick_bound(data)
    path = tmp_path / "long.mid"
    path.write_bytes(data)
    assert read_notes(path).values.tolist() == [[60, 64, 0.0, 0.5]]
    assert calls == [1]
    # 1000 ticks more: the parser's int32 count would wrap; refused.
    body = note + (vlq(2**28 - 1) + b"\xff\x01\x00") * 7 + vlq(rest + 1000) + b"\xff\x01\x00"
    path.write_bytes(one_track_file(body + b"\x00\xff\x2f\x00"))
    with pytest.raises(MidiReadError, match="2147483648 ticks, more than the 2147483647 a reader can count"):
        read_notes(path)
    assert calls == [1, 1]


def test_runs_of_high_bytes_take_the_exact_walk(monkeypatch, tmp_path):
    # A track name in UTF-8 ("ÄÖ": 4 bytes >= 0x80 in a row): no byte bound, the walk decides.
    calls = spy_on_walk(monkeypatch)
    name = "ÄÖ Sonate".encode()
    body = (
        b"\x00\xff\x03"
        + vlq(len(name))
        + name
        + b"\x00\x90\x3c\x40"
        + vlq(480)
        + b"\x80\x3c\x40\x00\xff\x2f\x00"
    )
    data = one_track_file(body)
    assert tick_bound(data) is None
    path = tmp_path / "name.mid"
    path.write_bytes(data)
    assert read_notes(path).values.tolist() == [[60, 64, 0.0, 0.5]]
    assert calls == [1]


def reference_score_to_notes(score, sustain: bool) -> pd.DataFrame:
    """score_to_notes by its definition, from the pandas note-table helpers (no limits, no errors)."""
    tracks = [track for track in score.tracks if not track.is_drum]
    notes = [track.notes.numpy() for track in tracks]
    time = np.concatenate([n["time"] for n in notes]).astype(np.float64)
    duration = np.concatenate([n["duration"] for n in notes]).astype(np.float64)
    table = make_notes(
        np.concatenate([n["pitch"] for n in notes]),
        np.concatenate([n["velocity"] for n in notes]),
        time,
        time + np.maximum(duration, 0.0),
    )
    table = table[table["velocity"] > 0].reset_index(drop=True)
    if sustain:
        controls = [track.controls.numpy() for track in tracks]
        cc_time = np.concatenate([c["time"][c["number"] == 64] for c in controls]).astype(np.float64)
        cc_value = np.concatenate([c["value"][c["number"] == 64] for c in controls])
        table = fold_sustain(table, *pedal_intervals(cc_time, cc_value))
    else:
        table = clip_same_pitch_overlaps(table)
    return make_notes(table["pitch"], table["velocity"], table["start"], table["end"])


@st.composite
def scores(draw):
    """Scores with chords, repeated and simultaneous strikes of a pitch, unsorted tracks, drums, pedal."""
    score = symusic.Score(480, ttype="second")
    times = st.one_of(st.integers(0, 12).map(lambda k: k * 0.25), st.floats(0, 4, width=32))
    for _ in range(draw(st.integers(1, 3))):
        track = symusic.Track(
            "t", program=0, is_drum=draw(st.booleans()) and draw(st.booleans()), ttype="second"
        )
        for _ in range(draw(st.integers(0, 25))):
            pitch = draw(st.sampled_from([60, 61, 62]) | st.integers(0, 127))
            velocity = draw(st.sampled_from([0, 64, 80]) | st.integers(0, 127))
            duration = draw(st.sampled_from([0.0, 0.25, -0.1]) | st.floats(0, 3, width=32))
            track.notes.append(symusic.Note(draw(times), duration, pitch, velocity, "second"))
        for _ in range(draw(st.integers(0, 6))):
            number, value = (
                draw(st.sampled_from([64, 64, 7])),
                draw(st.sampled_from([0, 127]) | st.integers(0, 127)),
            )
            track.controls.append(symusic.ControlChange(draw(times), number, value, "second"))
        score.tracks.append(track)
    return score


@settings(max_examples=300, deadline=None)
@given(score=scores(), sustain=st.booleans())
def test_score_to_notes_equals_the_pandas_definition(score, sustain):
    try:
        got = score_to_notes(score, sustain=sustain)
    except MidiReadError as error:
        assert "no notes" in error.problem or "no sounding notes" in error.problem
        return
    pd.testing.assert_frame_equal(got, reference_score_to_notes(score, sustain), check_exact=True)


def test_note_table_without_pandas_block_api(monkeypatch, maestro_validation_files):
    import piano_gpt.midi as midi

    fast = read_notes(maestro_validation_files[0])
    monkeypatch.setattr(midi, "create_dataframe_from_blocks", None)  # as on pandas < 3
    pd.testing.assert_frame_equal(read_notes(maestro_validation_files[0]), fast, check_exact=True)
