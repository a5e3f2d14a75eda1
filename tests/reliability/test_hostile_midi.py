"""read_notes on odd and hostile MIDI files: the notes, read correctly, or a MidiReadError naming the file.

Files are written byte by byte (tests/reliability/midi_fabric.py), and the expected notes come from an
independent reference reader there, not from symusic.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from midi_fabric import (
    DRUM_CHANNEL,
    Note,
    Performance,
    chunk,
    header,
    note_table_problem,
    random_performance,
    tempo_event,
    track_bytes,
)

from piano_gpt.midi import MAX_MIDI_BYTES, MAX_NOTES, MAX_SECONDS, MAX_TICKS, MidiReadError, read_notes

HERE = Path(__file__).resolve().parent
# max_examples comes from the profile (tests/conftest.py): 120 derandomized by default, more to explore.
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def write(data: bytes, folder: Path | None = None) -> Path:
    handle, name = tempfile.mkstemp(suffix=".mid", dir=folder)
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    return Path(name)


def read_or_error(data: bytes, sustain: bool = True):
    """The note table, or the MidiReadError; any other exception fails the test."""
    path = write(data)
    try:
        return read_notes(path, sustain=sustain)
    except MidiReadError as error:
        assert error.path == str(path) and str(error).startswith(f"{path}: ")
        assert "\n" not in str(error)
        return error
    finally:
        path.unlink()


# --- strategies ---------------------------------------------------------------------------------

ticks = st.one_of(st.integers(0, 5_000), st.integers(0, 200_000), st.integers(0, 2**31 + 2**28))


@st.composite
def performances(draw, max_notes: int = 40) -> Performance:
    n_tracks = draw(st.integers(1, 5))
    fmt = draw(st.sampled_from([0, 1, 2] if n_tracks > 1 else [0, 1]))
    notes = []
    for _ in range(draw(st.integers(0, max_notes))):
        start = draw(ticks)
        notes.append(
            Note(
                pitch=draw(st.integers(0, 127)),  # outside 21..108 too
                velocity=draw(st.integers(1, 127)),
                start=start,
                end=start + draw(st.one_of(st.just(0), st.integers(0, 3_000))),  # zero-length notes
                track=draw(st.integers(0, n_tracks - 1)),
                channel=draw(st.sampled_from([0, 0, 1, 15, DRUM_CHANNEL])),
            )
        )
    if notes and draw(st.booleans()):  # overlapping strikes of one pitch, and exact duplicates
        base = draw(st.sampled_from(notes))
        shift = draw(st.integers(0, 500))
        notes.append(
            Note(base.pitch, draw(st.integers(1, 127)), base.start + shift, base.end + shift + 10, base.track)
        )
    return Performance(
        notes=notes,
        tempos=draw(st.lists(st.tuples(ticks, st.integers(1, 0xFFFFFF)), max_size=4)),
        pedal=[
            (t, v, draw(st.integers(0, n_tracks - 1)))
            for t, v in draw(st.lists(st.tuples(ticks, st.integers(0, 127)), max_size=6))
        ],
        fmt=fmt,
        tpq=draw(st.one_of(st.sampled_from([96, 384, 480, 960]), st.integers(1, 0x7FFF))),
        n_tracks=n_tracks,
        velocity0_offs=draw(st.booleans()),
        off_velocity=draw(st.integers(0, 127)),
        running_status=draw(st.booleans()),
    )


def assert_same_notes(got, expected) -> None:
    pitch, velocity, start, end = expected
    assert len(got) == len(pitch)
    np.testing.assert_array_equal(got["pitch"].to_numpy(), pitch)
    np.testing.assert_array_equal(got["velocity"].to_numpy(), velocity)
    np.testing.assert_allclose(got["start"].to_numpy(), start, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["end"].to_numpy(), end, rtol=1e-5, atol=1e-5)


def canonical(pitch, velocity, start, end):
    """By pitch, then start: near-equal starts of different pitches (an ulp apart, and the parser's
    float32 arithmetic differs from the reference's by about that) cannot swap the order."""
    order = np.lexsort((velocity, start, pitch))
    return pitch[order], velocity[order], start[order], end[order]


RESOLUTION_ULPS = 8  # the parser's float32 seconds can differ from the exact time by a few ulps


def strikes_below_resolution(performance: Performance) -> bool:
    """Whether two strikes of one pitch, at different ticks, start closer than the reader's time
    resolution (float32 seconds: ~1e-7 of the time). ``read_notes`` keeps one note per (start, pitch)
    in those float32 seconds, so such strikes may be read as one note or two: 3 ticks at 3 us per
    quarter are 20 ns apart, 5 orders of magnitude below the tokenizer's 10 ms. Which of the two the
    parser gives depends on its own rounding, which no reference model reproduces bit for bit."""
    by_pitch: dict[int, set[int]] = {}
    for note in performance.notes:
        if note.channel != DRUM_CHANNEL:
            by_pitch.setdefault(note.pitch, set()).add(note.start)
    for starts in by_pitch.values():
        if len(starts) < 2:
            continue
        ticks = np.array(sorted(starts))
        seconds = performance.seconds(ticks)
        resolution = RESOLUTION_ULPS * np.spacing(np.float32(np.abs(seconds).max()))
        if (np.diff(seconds) <= resolution).any():
            return True
    return False


def check_read(performance: Performance, label=event) -> None:
    """The property: the reference reader's notes, or our refusal; strikes of one pitch closer than
    the float32 resolution may merge (see :func:`strikes_below_resolution`). ``label``: hypothesis's
    ``event`` (a statistics label) inside a property test."""
    result = read_or_error(performance.to_bytes(), sustain=False)
    expected = performance.expected_notes()
    label(re.sub(r"\d+", "N", result.problem)[:45] if isinstance(result, MidiReadError) else "read")
    if performance.longest_track_ticks() > MAX_TICKS:
        assert isinstance(result, MidiReadError) and "a reader can count" in result.problem
    elif len(expected[0]) == 0:
        assert isinstance(result, MidiReadError) and "no notes" in result.problem
    elif expected[3].max() > MAX_SECONDS:
        assert isinstance(result, MidiReadError) and "s limit" in result.problem
    else:
        assert not isinstance(result, MidiReadError), result
        assert note_table_problem(result) is None
        if strikes_below_resolution(performance):
            label("strikes of one pitch closer than the float32 resolution")
            assert set(result["pitch"]) == set(expected[0].tolist())
            assert len(result) <= len(expected[0]) + 1
            return
        got = result.sort_values(["pitch", "start", "velocity"], kind="stable")
        assert_same_notes(got, canonical(*expected))


# --- properties ---------------------------------------------------------------------------------


@SETTINGS
@given(performances())
def test_notes_are_read_correctly_or_refused_clearly(performance):
    """Types 0/1/2, many tracks, tempo changes, any division, running status, velocity-0 note-offs,
    zero-length and overlapping notes, drums, pitches outside the piano, huge delta times."""
    check_read(performance)


@pytest.mark.parametrize(
    ("tpq", "tempos", "start", "gap"),
    [
        (480, [(3409, 3), (9939, 3)], 4671, 5),  # the reference kept 3 notes, the parser 2
        (17762, [(165141, 5163347), (34326, 3), (4505, 3), (192973, 3)], 110328, 3),  # 2 against 3
        (384, [(4338, 3), (1138, 3), (768, 3)], 4220, 3),
    ],
)
def test_strikes_closer_than_the_time_resolution(tpq, tempos, start, gap):
    """The cases that made the property test fail at random: 3 us per quarter, zero-length strikes
    of one pitch a few ticks (tens of nanoseconds) apart."""
    notes = [
        Note(60, 64, start, start),
        Note(60, 70, start + gap, start + gap),
        Note(62, 64, start + 50, start + 60),
        Note(60, 80, start + 2 * gap, start + 2 * gap + 1000),
    ]
    performance = Performance(notes, tempos=tempos, tpq=tpq)
    assert strikes_below_resolution(performance)
    check_read(performance, label=lambda _: None)


@pytest.mark.parametrize("fmt", [0, 1])
@pytest.mark.parametrize("reverse", [False, True])
def test_equally_loud_strikes_together_last_until_the_last_release(fmt, reverse):
    """Found by the explore profile: two strikes of one pitch at one tick, equally loud, on two
    channels: the note kept was whichever the parser listed first. Now the longest, in any order."""
    notes = [Note(60, 50, 96, 96, channel=1), Note(60, 50, 96, 192, channel=0)]
    performance = Performance(notes[::-1] if reverse else notes, fmt=fmt, tpq=96)
    check_read(performance, label=lambda _: None)
    result = read_or_error(performance.to_bytes(), sustain=False)
    assert len(result) == 1 and result["end"].iloc[0] == pytest.approx(1.0)  # 192 ticks at 120 bpm


def test_property_tests_are_derandomized_by_default():
    """CI and the README's command run the same examples every time (tests/conftest.py); the random
    exploration is ``--hypothesis-profile=explore``."""
    assert settings.default.derandomize and settings.default.database is None


@SETTINGS
@given(performances(max_notes=25))
def test_sustain_only_lengthens_notes(performance):
    data = performance.to_bytes()
    dry, wet = read_or_error(data, sustain=False), read_or_error(data, sustain=True)
    if isinstance(dry, MidiReadError):
        assert isinstance(wet, MidiReadError)
        return
    if isinstance(wet, MidiReadError):  # the pedal may hold notes past the time limit
        assert "s limit" in wet.problem
        return
    assert note_table_problem(wet) is None
    for column in ("pitch", "velocity", "start"):
        np.testing.assert_array_equal(wet[column].to_numpy(), dry[column].to_numpy())
    assert (wet["end"].to_numpy() >= dry["end"].to_numpy()).all()
    if not performance.pedal:
        np.testing.assert_array_equal(wet["end"].to_numpy(), dry["end"].to_numpy())


def _valid_file(seed: int) -> bytes:
    import random

    return random_performance(random.Random(seed)).to_bytes()


@SETTINGS
@given(
    seed=st.integers(0, 1000),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_damaged_files_give_notes_or_our_error(seed, edits):
    data = bytearray(_valid_file(seed))
    for where, value in edits:
        data[int(where * len(data))] = value
    result = read_or_error(bytes(data))
    assert isinstance(result, MidiReadError) or note_table_problem(result) is None


@SETTINGS
@given(seed=st.integers(0, 1000), keep=st.floats(0, 1))
def test_truncated_files_give_notes_or_our_error(seed, keep):
    data = _valid_file(seed)
    result = read_or_error(data[: int(keep * len(data))])
    assert isinstance(result, MidiReadError) or note_table_problem(result) is None


@SETTINGS
@given(
    prefix=st.sampled_from([b"", b"MThd", header(0, 1, 480), header(1, 3, 96) + b"MTrk"]),
    body=st.binary(max_size=3000),
)
def test_random_bytes_give_notes_or_our_error(prefix, body):
    for data in (prefix + body, prefix + chunk(b"MTrk", body)):
        result = read_or_error(data)
        assert isinstance(result, MidiReadError) or note_table_problem(result) is None


# --- the cases of the issue, one by one ---------------------------------------------------------

NOTE = [(0, b"\x90\x3c\x40"), (480, b"\x80\x3c\x40")]


def one_track(events, division: int = 480, fmt: int = 1) -> bytes:
    return header(fmt, 1, division) + chunk(b"MTrk", track_bytes(events))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty file"),
        (b"RIFF\x00\x00\x00\x04WAVE", "not a MIDI file (RMID)"),
        (b"GIF89a" + bytes(100), "not a MIDI file"),
        (header(1, 1, 0) + chunk(b"MTrk", track_bytes(NOTE)), "0 ticks per quarter"),
        (header(1, 1, 0xE728) + chunk(b"MTrk", track_bytes(NOTE)), "malformed MIDI"),
        (one_track(NOTE)[:-6], "malformed MIDI"),
        (one_track(NOTE)[:20], "malformed MIDI"),
        (one_track([(0, b"\xb0\x40\x7f"), (480, b"\xb0\x40\x00")]), "no notes"),  # pedal without notes
        (one_track([(0, b"\x99\x24\x40"), (480, b"\x89\x24\x40")]), "no notes"),  # drums only
        (one_track([(0, b"\x90\x3c\x40")]), "no notes"),  # a note never released
        (one_track([(k * 0x0FFFFFFF, b"\x90\x3c\x40") for k in range(1, 10)]), "more than the 2147483647"),
        (one_track([(0, b"\x90\x3c\x40"), (2_000_000_000, b"\x80\x3c\x40")], division=1), "s limit"),
    ],
)
def test_refusals_name_the_file_and_the_problem(data, problem):
    result = read_or_error(data)
    assert isinstance(result, MidiReadError) and problem in result.problem, result


def test_odd_but_legal_files_are_read(tmp_path):
    # Velocity-0 note-ons as note-offs, with running status, in a type 0 file.
    data = header(0, 1, 480) + chunk(
        b"MTrk", b"\x00\x90\x3c\x40\x83\x60\x3c\x00\x00\x3e\x50\x83\x60\x3e\x00\x00\xff\x2f\x00"
    )
    notes = read_notes(write(data, tmp_path))
    assert notes.values.tolist() == [[60, 64, 0.0, 0.5], [62, 80, 0.5, 1.0]]
    # Overlapping strikes of one pitch: the second strike ends the first; a zero-length note stays.
    notes = read_notes(
        write(
            one_track(
                [
                    (0, b"\x90\x3c\x40"),
                    (240, b"\x90\x3c\x50"),
                    (480, b"\x80\x3c\x00"),
                    (720, b"\x80\x3c\x00"),
                    (960, b"\x90\x40\x40"),
                    (960, b"\x80\x40\x40"),
                ]
            ),
            tmp_path,
        ),
        sustain=False,
    )
    assert notes.values.tolist() == [[60, 64, 0.0, 0.25], [60, 80, 0.25, 0.75], [64, 64, 1.0, 1.0]]
    # Tempo changes mid-file, a type 2 file, pitches outside the piano (kept: the builder drops them).
    data = (
        header(2, 2, 480)
        + chunk(
            b"MTrk",
            track_bytes(
                [
                    (0, tempo_event(1_000_000)),
                    (0, b"\x90\x10\x40"),
                    (480, b"\x80\x10\x40"),
                    (480, tempo_event(250_000)),
                ]
            ),
        )
        + chunk(b"MTrk", track_bytes([(480, b"\x90\x7f\x40"), (960, b"\x80\x7f\x40")]))
    )
    assert read_notes(write(data, tmp_path)).values.tolist() == [[16, 64, 0.0, 1.0], [127, 64, 1.0, 1.25]]
    # A RIFF RMID wrapper around a MIDI file.
    smf = one_track(NOTE)
    rmid = (
        b"RIFF" + (len(smf) + 12).to_bytes(4, "little") + b"RMIDdata" + len(smf).to_bytes(4, "little") + smf
    )
    assert read_notes(write(rmid, tmp_path)).values.tolist() == [[60, 64, 0.0, 0.5]]


def test_unreadable_paths_are_our_error(tmp_path):
    for path, problem in [(tmp_path, "Is a directory"), (tmp_path / "nope.mid", "No such file")]:
        with pytest.raises(MidiReadError, match=problem) as caught:
            read_notes(path)
        assert caught.value.path == str(path)


def test_size_limit_is_checked_before_reading(tmp_path):
    path = tmp_path / "huge.mid"
    with open(path, "wb") as handle:  # sparse: nothing is written
        handle.write(one_track(NOTE))
        handle.truncate(MAX_MIDI_BYTES + 1)
    with pytest.raises(MidiReadError, match="byte limit"):
        read_notes(path)


def dense_notes(n: int, tracks: int = 1) -> bytes:
    """``n`` notes in as few bytes as MIDI allows (running status, velocity-0 offs), over ``tracks``."""
    per_track = -(-n // tracks)
    pitch = (21 + np.arange(per_track) % 88).astype(np.uint8)
    events = np.zeros((per_track, 6), np.uint8)
    events[:, 1] = events[:, 4] = pitch
    events[:, 2], events[:, 3] = 64, 1
    body = bytes([0, 0x90]) + events.tobytes()[1:] + b"\x00\xff\x2f\x00"
    return header(1, tracks, 480) + chunk(b"MTrk", body) * tracks


def test_millions_of_notes_are_refused_past_the_limit(tmp_path):
    with pytest.raises(MidiReadError, match=f"more than {MAX_NOTES} notes"):
        read_notes(write(dense_notes(MAX_NOTES + 1), tmp_path))


@pytest.mark.slow
def test_memory_and_time_stay_bounded_at_the_limits(tmp_path):
    """In a fresh process: the largest file the size limit lets through (11M notes: refused), 65535
    tracks, and the most notes allowed (read and tokenized, as the builder does) each stay under
    1.5 GB of memory and 30 s."""
    (tmp_path / "dense.mid").write_bytes(dense_notes((MAX_MIDI_BYTES - 40) // 6))
    assert (tmp_path / "dense.mid").stat().st_size <= MAX_MIDI_BYTES
    (tmp_path / "tracks.mid").write_bytes(header(1, 65535, 480) + chunk(b"MTrk", track_bytes(NOTE)) * 65535)
    (tmp_path / "allowed.mid").write_bytes(dense_notes(MAX_NOTES))
    script = f"""
import json, resource, sys, time
sys.path.insert(0, {str(HERE)!r})
from piano_gpt.data.shards import tokenize_item
from piano_gpt.data.sources import MidiFileItem
from piano_gpt.tokenizers import ExponentialTimeTokenizer
out = {{}}
for name in ("dense", "tracks", "allowed"):
    t0 = time.time()
    result = tokenize_item(MidiFileItem({str(tmp_path)!r} + "/" + name + ".mid", "{{}}"), ExponentialTimeTokenizer())
    out[name] = [result if isinstance(result, str) else sum(len(r[1]) for r in result), time.time() - t0]
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.splitlines()[-1])
    assert f"more than {MAX_NOTES} notes" in out["dense"][0]
    assert "too few notes" in out["tracks"][0]  # one (deduplicated) note: no record, and a reason
    assert out["allowed"][0] == MAX_NOTES
    assert out["peak_mb"] < 1500, out
    assert max(seconds for _, seconds in (out["dense"], out["tracks"], out["allowed"])) < 30, out
