"""MIDI files <-> note tables.

A note table is a pandas DataFrame with columns ``pitch, velocity, start, end`` (seconds), sorted by
start. The sustain pedal (CC64, down while value >= 64) is folded into note ends: a note released
while the pedal is down rings until the pedal comes up or the same pitch is struck again.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

try:
    from pandas.api.internals import create_dataframe_from_blocks
except ImportError:  # pandas < 3
    create_dataframe_from_blocks = None

NOTE_COLUMNS = ["pitch", "velocity", "start", "end"]
_COLUMN_INDEX = pd.Index(NOTE_COLUMNS)
_INT_COLUMNS, _FLOAT_COLUMNS = np.array([0, 1]), np.array([2, 3])  # block placements
PIANO_PITCH_RANGE = (21, 108)
SUSTAIN_CC = 64

# Limits for untrusted files (docs/reliability.md). A bigger file is refused before parsing (MAESTRO
# files are under 1 MB; parsing 64 MiB peaks under 1 GB); more notes than MAX_NOTES (reading and
# tokenizing 1M notes takes ~1 GB; MAESTRO pieces have a few 10k) or notes lasting past MAX_SECONDS (a
# corrupt delta time or tempo: tokens grow with duration) are refused after parsing.
MAX_MIDI_BYTES = 64 * 1024 * 1024
MAX_NOTES = 1_000_000
MAX_SECONDS = 24 * 3600.0
MAX_TICKS = 2**31 - 1  # the parser counts ticks in int32: a track longer than this would wrap around


class MidiReadError(ValueError):
    """A MIDI file could not be turned into notes. The message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def empty_notes() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pitch": np.zeros(0, np.int64),
            "velocity": np.zeros(0, np.int64),
            "start": np.zeros(0),
            "end": np.zeros(0),
        }
    )


def make_notes(pitch, velocity, start, end) -> pd.DataFrame:
    """Build a canonical note table (typed, sorted by start then pitch, fresh index)."""
    notes = pd.DataFrame(
        {
            "pitch": np.asarray(pitch, dtype=np.int64),
            "velocity": np.asarray(velocity, dtype=np.int64),
            "start": np.asarray(start, dtype=np.float64),
            "end": np.asarray(end, dtype=np.float64),
        }
    )
    return notes.sort_values(["start", "pitch"], kind="stable").reset_index(drop=True)


def pedal_intervals(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(down, up) times of the sustain pedal from CC64 events; a pedal never lifted is up at +inf."""
    if not (times[1:] >= times[:-1]).all():  # (NaN: not sorted)
        order = np.argsort(times, kind="stable")
        times, values = times[order], values[order]
    down = values >= 64
    # Only changes of state count: repeated "down" values (127, 120, 110...) are one press.
    previous = np.concatenate([[False], down[:-1]])
    presses = times[down & ~previous]
    releases = times[~down & previous]
    if len(releases) < len(presses):
        releases = np.concatenate([releases, [np.inf]])
    return presses, releases


def fold_sustain(notes: pd.DataFrame, pedal_down: np.ndarray, pedal_up: np.ndarray) -> pd.DataFrame:
    """Extend note ends through sustain: to the pedal release, or the next strike of the same pitch."""
    notes = clip_same_pitch_overlaps(notes)
    if len(notes) == 0 or len(pedal_down) == 0:
        return notes
    notes = notes.copy()
    notes["end"] = sustained_ends(notes["end"].to_numpy(), next_same_pitch_start(notes), pedal_down, pedal_up)
    return notes


def sustained_ends(
    end: np.ndarray, next_strike: np.ndarray, pedal_down: np.ndarray, pedal_up: np.ndarray
) -> np.ndarray:
    """Note ends with the sustain pedal folded in (``pedal_down`` non-empty, from :func:`pedal_intervals`):
    a note released while the pedal is down rings until it comes up or ``next_strike`` of its pitch."""
    # The release of the last press at or before each end (-inf before the first press).
    up = np.concatenate([[-np.inf], pedal_up])[np.searchsorted(pedal_down, end, side="right")]
    released_at = np.where(end < up, up, end)  # sustained: to the release
    new_end = np.maximum(end, np.minimum(released_at, next_strike))
    # A pedal held to the end of the file releases at the last note's end, not at infinity.
    held = np.isinf(new_end)
    if held.any():
        new_end[held] = max(float(np.nanmax(end)), float(np.nanmax(pedal_down)), 0.0)
    return np.maximum(new_end, end)


def next_same_pitch_start(notes: pd.DataFrame) -> np.ndarray:
    """For each note, the start of the next note of the same pitch (+inf when there is none)."""
    pitch = notes["pitch"].to_numpy()
    start = notes["start"].to_numpy()
    return _next_start(pitch, start, np.lexsort((start, pitch)))


def _next_start(pitch: np.ndarray, start: np.ndarray, order: np.ndarray) -> np.ndarray:
    """:func:`next_same_pitch_start` given ``order``, the notes sorted by pitch then start."""
    following = np.empty(len(pitch))
    if len(pitch):
        pitch, start = pitch[order], start[order]
        following[order[:-1]] = np.where(pitch[1:] == pitch[:-1], start[1:], np.inf)
        following[order[-1]] = np.inf
    return following


def clip_same_pitch_overlaps(notes: pd.DataFrame) -> pd.DataFrame:
    """A piano key cannot sound twice: end each note by the next strike of its pitch.

    Notes of the same pitch starting at the same time are duplicates; the loudest one is kept (of
    equally loud ones, the longest: the key is held until the last release).
    """
    if len(notes) == 0:
        return notes
    notes = notes.sort_values(
        ["start", "pitch", "velocity", "end"], ascending=[True, True, False, False], kind="stable"
    )
    notes = notes.drop_duplicates(["start", "pitch"], keep="first").reset_index(drop=True)
    following = next_same_pitch_start(notes)
    notes["end"] = np.minimum(notes["end"].to_numpy(), following)
    return notes


def _check_file(path: Path) -> bytes:
    """The Standard MIDI File bytes of ``path`` (unwrapped from a RIFF RMID file), size-checked."""
    try:
        size = path.stat().st_size
        if size == 0:
            raise MidiReadError(path, "empty file")
        if size > MAX_MIDI_BYTES:
            raise MidiReadError(path, f"file is {size} bytes, over the {MAX_MIDI_BYTES} byte limit")
        # os.read, not open().read(MAX_MIDI_BYTES + 1): no 64 MB buffer, fewer layers (~2x faster).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            data = os.read(fd, size + 1)
            while len(data) <= MAX_MIDI_BYTES:  # on to the end (the file may have grown since stat)
                more = os.read(fd, min(1 << 16, MAX_MIDI_BYTES + 1 - len(data)))
                if not more:
                    break
                data += more
        finally:
            os.close(fd)
    except OSError as error:
        raise MidiReadError(path, f"cannot open file ({error.strerror or error})") from error
    if len(data) > MAX_MIDI_BYTES:
        raise MidiReadError(path, f"file is over the {MAX_MIDI_BYTES} byte limit")
    if data[:4] == b"RIFF":
        data = _unwrap_rmid(path, data)
    if data[:4] != b"MThd":
        raise MidiReadError(path, f"not a MIDI file (starts with {data[:4]!r}, expected b'MThd')")
    if len(data) >= 14 and data[12:14] == b"\x00\x00":
        raise MidiReadError(path, "corrupt header: 0 ticks per quarter note")
    return data


def _unwrap_rmid(path: Path, data: bytes) -> bytes:
    """The MIDI data inside a RIFF RMID file."""
    if data[8:12] != b"RMID":
        raise MidiReadError(path, f"a RIFF file of type {data[8:12]!r}, not a MIDI file (RMID)")
    pos = 12
    while pos + 8 <= len(data):
        kind, length = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if kind == b"data":
            return data[pos + 8 : pos + 8 + length]
        pos += 8 + length + (length & 1)
    raise MidiReadError(path, "RIFF RMID file without a data chunk")


def _vlq(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    while pos < end:
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            break
    return value, pos


_BOUND_CHUNK = 1 << 22  # bytes per step of tick_bound: bounded memory, and uint32 byte sums cannot wrap


def tick_bound(data: bytes) -> int | None:
    """An upper bound of :func:`longest_track_ticks`, from the raw bytes (numpy, no parsing); None
    when there is none (a run of 4 bytes >= 0x80 somewhere).

    The walk reads delta times as variable-length quantities: bytes >= 0x80, then one byte < 0x80 (or
    the end of the track). A byte of a quantity counts its low 7 bits times 128**e, e the number of
    bytes of the quantity after it, and e is at most d, the distance to the next byte < 0x80 of the
    file. So the sum over *every* byte of (byte & 0x7F) * 128**d bounds the sum of all quantities
    read, each delta time of each track among them. Without 4 bytes >= 0x80 in a row, d <= 3: the
    bound is the low 7 bits of the bytes < 0x80, 128 times those of the bytes >= 0x80 followed by one
    < 0x80 (in event data: status bytes), and 128**2 or 128**3 times the rare rest. On MAESTRO it
    is about 500 per byte, so files up to a few MB never need the exact walk.
    """
    a = np.frombuffer(data + b"\0\0\0", np.uint8)  # past the end: bytes < 0x80 (no quantity is there)
    total = 0
    for i in range(0, len(a) - 3, _BOUND_CHUNK):
        m = min(_BOUND_CHUNK, len(a) - 3 - i)
        # (Few distinct numpy operations: each costs ~10 us when its code is not in the CPU's caches.)
        segment = a[i : i + m + 3]
        high = (segment >= 0x80).view(np.uint8)
        body, high_body = segment[:m], high[:m]
        n_high = int(high_body.sum(dtype=np.uint32))
        low_bits = int(body.sum(dtype=np.uint32)) - 128 * n_high  # every byte & 0x7F
        high_low_bits = int((body * high_body).sum(dtype=np.uint32)) - 128 * n_high  # bytes >= 0x80 only
        total += low_bits + 127 * high_low_bits  # d = 0 or 1: times 1 or 128
        pairs = high_body * high[1 : m + 1]  # d >= 2: add the difference, byte by byte (rare)
        if pairs.sum(dtype=np.uint32):
            k = np.flatnonzero(pairs)
            if (high[k + 2] & high[k + 3]).any():
                return None
            weight = np.where(high[k + 2] > 0, 128**3 - 128, 128**2 - 128)
            total += int(((segment[k] & 0x7F) * weight).sum())
    return total


def longest_track_ticks(data: bytes) -> int:
    """The largest sum of delta times of any track (exact, unlike the parser's int32 count).

    A scan of the event structure only; anything malformed ends the scan of that track (the parser
    has already accepted the file, so this is about delta times, not about validity).
    """
    longest = 0
    pos = 8 + int.from_bytes(data[4:8], "big")
    size = len(data)
    while pos + 8 <= size:
        is_track = data[pos : pos + 4] == b"MTrk"
        start = pos + 8
        end = min(size, start + int.from_bytes(data[pos + 4 : pos + 8], "big"))
        pos = end
        if not is_track:
            continue
        p, total, status = start, 0, 0
        while p < end:
            delta, p = _vlq(data, p, end)
            total += delta
            if p >= end:
                break
            kind = data[p]
            if kind >= 0x80:
                p += 1
                if kind < 0xF0:
                    status = kind
            else:
                kind = status  # running status
            if kind == 0xFF:  # meta: type, length, data
                length, p = _vlq(data, p + 1, end)
                p += length
            elif kind in (0xF0, 0xF7):  # sysex: length, data
                length, p = _vlq(data, p, end)
                p += length
            elif kind >= 0x80:
                p += 1 if (kind & 0xF0) in (0xC0, 0xD0) else 2
            else:
                break
        longest = max(longest, total)
    return longest


def read_notes(path: str | os.PathLike, sustain: bool = True) -> pd.DataFrame:
    """Read every note of a MIDI file (all tracks) as a note table in seconds, sustain folded in.

    Drum-channel notes are skipped, notes never ended are dropped, a pitch struck again ends its
    previous note. Any file that cannot be read this way (malformed, empty, over the limits above)
    raises :class:`MidiReadError` naming the file.
    """
    import symusic

    path = Path(path)
    data = _check_file(path)
    try:
        score = symusic.Score.from_midi(data, ttype="second")
    except Exception as error:  # symusic raises plain RuntimeError/ValueError for malformed files
        raise MidiReadError(path, f"malformed MIDI ({error})") from error
    bound = tick_bound(data)
    if bound is None or bound > MAX_TICKS:  # an overflow is possible: walk the tracks (slow, exact)
        ticks = longest_track_ticks(data)
        if ticks > MAX_TICKS:
            raise MidiReadError(
                path,
                f"a track lasts {ticks} ticks, more than the {MAX_TICKS} a reader can count (corrupt delta times)",
            )
    return score_to_notes(score, path, sustain=sustain)


def score_to_notes(score, path: str | os.PathLike = "<score>", sustain: bool = True) -> pd.DataFrame:
    """The note table of a ``symusic.Score`` in seconds (see :func:`read_notes`), built in numpy.

    The same as :func:`make_notes` of every sounding note, then :func:`fold_sustain` (or
    :func:`clip_same_pitch_overlaps` without sustain) and :func:`make_notes` again.
    """
    times, durations, pitches, velocities = [], [], [], []
    cc_times, cc_values = [], []
    n_notes = 0
    for track in score.tracks:
        if track.is_drum:
            continue
        n_notes += len(track.notes)
        if n_notes > MAX_NOTES:
            raise MidiReadError(path, f"more than {MAX_NOTES} notes")
        arrays = track.notes.numpy()
        times.append(arrays["time"])
        durations.append(arrays["duration"])
        pitches.append(arrays["pitch"])
        velocities.append(arrays["velocity"])
        if sustain:
            controls = track.controls.numpy()
            is_sustain = controls["number"] == SUSTAIN_CC
            cc_times.append(controls["time"][is_sustain])
            cc_values.append(controls["value"][is_sustain])
    if n_notes == 0:
        raise MidiReadError(path, "contains no notes")
    time, duration = _concat(times), _concat(durations)  # float32 seconds
    pitch, velocity = _concat(pitches), _concat(velocities)  # int8
    sounding = velocity > 0
    n_sounding = np.count_nonzero(sounding)
    if n_sounding == 0:
        raise MidiReadError(path, "contains no sounding notes (all velocities are 0)")
    # All finite <=> the float64 sum is (at most MAX_NOTES float32 values: no overflow); fewer passes.
    if not math.isfinite(float(time.sum(dtype=np.float64)) + float(duration.sum(dtype=np.float64))):
        raise MidiReadError(path, "note times are not finite (corrupt tempo or time division)")
    if n_sounding < len(velocity):
        time, duration, pitch, velocity = (
            time[sounding],
            duration[sounding],
            pitch[sounding],
            velocity[sounding],
        )
    start = time.astype(np.float64)
    end = start + np.maximum(duration, 0.0)  # float32 max, float64 sum: as make_notes(time, time + max(...))
    # As clip_same_pitch_overlaps: sorted by start, pitch, loudest first; one note per (start, pitch).
    key = pitch.astype(np.int32) * 256 - velocity  # pitch, then velocity descending
    same_start = start[1:] == start[:-1]
    if not ((start[1:] > start[:-1]) | (same_start & (key[1:] >= key[:-1]))).all():
        order = _note_order(start, key)
        start, end, pitch, velocity = start[order], end[order], pitch[order], velocity[order]
        same_start = start[1:] == start[:-1]
    repeat = same_start & (pitch[1:] == pitch[:-1])
    if repeat.any():
        # Equally loud strikes of one pitch together are one note held until the last release (the
        # longest), whatever order the tracks and channels came in.
        for i in np.flatnonzero(repeat & (velocity[1:] == velocity[:-1]))[::-1]:
            end[i] = max(end[i], end[i + 1])
        keep = np.concatenate([[True], ~repeat])
        start, end, pitch, velocity = start[keep], end[keep], pitch[keep], velocity[keep]
    # Sorted by start and (start, pitch) unique: a stable sort by pitch orders by pitch then start.
    next_strike = _next_start(pitch, start, np.argsort(pitch, kind="stable"))
    end = np.minimum(end, next_strike)
    if sustain:
        cc_time, cc_value = _concat(cc_times), _concat(cc_values)  # float32: times converted when few
        if not math.isfinite(float(cc_time.sum(dtype=np.float64))):
            finite = np.isfinite(cc_time)
            cc_time, cc_value = cc_time[finite], cc_value[finite]
        down, up = pedal_intervals(cc_time, cc_value)
        if len(down):
            end = sustained_ends(end, next_strike, down.astype(np.float64), up.astype(np.float64))
    last = float(end.max())
    if last > MAX_SECONDS:
        raise MidiReadError(
            path,
            f"notes last until {last:.0f} s, over the {MAX_SECONDS:.0f} s limit (corrupt delta times or tempo?)",
        )
    return _note_table(pitch, velocity, start, end)


def _note_table(pitch: np.ndarray, velocity: np.ndarray, start: np.ndarray, end: np.ndarray) -> pd.DataFrame:
    """The DataFrame of canonical note columns (already sorted), built as pandas stores it: an int64
    and a float64 block. ~5x faster than ``pd.DataFrame(dict)`` (~10 against ~50 us)."""
    if create_dataframe_from_blocks is None:  # pandas < 3
        return pd.DataFrame(
            {
                "pitch": pitch.astype(np.int64),
                "velocity": velocity.astype(np.int64),
                "start": start,
                "end": end,
            }
        )
    ints = np.empty((2, len(pitch)), np.int64)
    ints[0], ints[1] = pitch, velocity
    floats = np.empty((2, len(start)), np.float64)
    floats[0], floats[1] = start, end
    return create_dataframe_from_blocks(
        [(ints, _INT_COLUMNS), (floats, _FLOAT_COLUMNS)],
        index=pd.RangeIndex(len(pitch)),
        columns=_COLUMN_INDEX,
    )


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _note_order(start: np.ndarray, key: np.ndarray) -> np.ndarray:
    """The stable order by start then ``key`` (int8 pitch * 256 - velocity 1..127)."""
    # Two stable sorts: by key (shifted into 0..65406: a 16-bit radix sort), then by start.
    by_key = np.argsort((key + (128 * 256 + 127)).astype(np.uint16), kind="stable")
    return by_key[np.argsort(start[by_key], kind="stable")]


def notes_to_score(notes: pd.DataFrame):
    import symusic

    score = symusic.Score(480, ttype="second")
    track = symusic.Track("piano", program=0, is_drum=False, ttype="second")
    start = notes["start"].to_numpy(np.float64)
    duration = np.maximum(notes["end"].to_numpy(np.float64) - start, 1e-3).astype(np.float32)
    start = np.ascontiguousarray(start.astype(np.float32))
    pitch = np.clip(notes["pitch"].to_numpy(), 0, 127).astype(np.int8)
    velocity = np.clip(notes["velocity"].to_numpy(), 1, 127).astype(np.int8)
    track.notes.extend(
        symusic.Note.from_numpy(start, np.ascontiguousarray(duration), pitch, velocity, "second")
    )
    score.tracks.append(track)
    return score


def write_notes(notes: pd.DataFrame, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write a note table as a standard MIDI file (one piano track, 120 bpm, 480 ticks per quarter).

    ``metadata`` (e.g. generation settings) is stored as text meta events at time 0.
    """
    import symusic

    score = notes_to_score(notes)
    for key, value in (metadata or {}).items():
        score.markers.append(symusic.TextMeta(0.0, f"{key}={value}", "second"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    score.dump_midi(str(path))
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``key=value`` text markers written by :func:`write_notes`."""
    import symusic

    score = symusic.Score(str(path), ttype="second")
    pairs = (marker.text.split("=", 1) for marker in score.markers if "=" in marker.text)
    return {key: value for key, value in pairs}


# --- augmentation -------------------------------------------------------------------------------


def pitch_shift(notes: pd.DataFrame, shift: int) -> pd.DataFrame:
    shifted = notes.copy()
    shifted["pitch"] = shifted["pitch"] + int(shift)
    return shifted


def change_speed(notes: pd.DataFrame, factor: float) -> pd.DataFrame:
    """Play ``factor`` times faster: every time is divided by the factor."""
    faster = notes.copy()
    faster["start"] = faster["start"] / factor
    faster["end"] = faster["end"] / factor
    return faster


def allowed_pitch_shifts(notes: pd.DataFrame, max_shift: int) -> np.ndarray:
    """Shifts in [-max_shift, max_shift] that keep every note inside the piano range."""
    if len(notes) == 0 or max_shift <= 0:
        return np.array([0])
    low = max(-max_shift, PIANO_PITCH_RANGE[0] - int(notes["pitch"].min()))
    high = min(max_shift, PIANO_PITCH_RANGE[1] - int(notes["pitch"].max()))
    return np.arange(low, high + 1) if low <= high else np.array([0])


def augment(
    notes: pd.DataFrame,
    rng: np.random.Generator,
    max_pitch_shift: int = 0,
    speed_change_factors: list[float] | tuple[float, ...] = (),
) -> pd.DataFrame:
    """Random pitch shift (never out of range) and speed change, drawn from ``rng``."""
    shifts = allowed_pitch_shifts(notes, max_pitch_shift)
    shift = int(rng.choice(shifts))
    factors = [1.0, *speed_change_factors] if speed_change_factors else [1.0]
    factor = float(rng.choice(factors))
    if shift:
        notes = pitch_shift(notes, shift)
    if factor != 1.0:
        notes = change_speed(notes, factor)
    return notes
