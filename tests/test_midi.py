import numpy as np
import pandas as pd
import pytest
import symusic

from piano_gpt.midi import (
    MidiReadError,
    allowed_pitch_shifts,
    augment,
    make_notes,
    read_metadata,
    read_notes,
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
