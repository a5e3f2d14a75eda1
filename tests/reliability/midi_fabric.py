"""Hand-made Standard MIDI Files, byte by byte, and an independent reference reader for them.

Used by the reliability tests and by ``bench/fuzz_midi.py``. The writer can produce what symusic's
writer cannot: running status, note-offs as velocity-0 note-ons, type 0/1/2 files, lying chunk
lengths, huge delta times, tempo changes anywhere. ``Performance.expected_notes()`` is what a correct
reader must return for it (``read_notes(..., sustain=False)``), computed here without symusic.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DEFAULT_TEMPO = 500_000  # microseconds per quarter note (120 bpm)
DRUM_CHANNEL = 9


def vlq(value: int) -> bytes:
    """A MIDI variable-length quantity (any non-negative int; > 0x0FFFFFFF makes a non-standard 5+ byte one)."""
    if value < 0:
        raise ValueError("negative delta time")
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def header(fmt: int, n_tracks: int, division: int, length: int = 6) -> bytes:
    return b"MThd" + struct.pack(">IHHH", length, fmt & 0xFFFF, n_tracks & 0xFFFF, division & 0xFFFF)


def chunk(kind: bytes, body: bytes, length: int | None = None) -> bytes:
    return kind + struct.pack(">I", len(body) if length is None else length) + body


def tempo_event(us_per_quarter: int) -> bytes:
    return b"\xff\x51\x03" + int(us_per_quarter).to_bytes(3, "big")


END_OF_TRACK = b"\xff\x2f\x00"


MAX_DELTA = 0x0FFFFFFF  # the largest delta time a standard (4-byte) variable-length quantity holds
EMPTY_TEXT = b"\xff\x01\x00"


def track_bytes(events: list[tuple[int, bytes]], running_status: bool = False, end: bool = True) -> bytes:
    """A track body from (absolute tick, event bytes) pairs, sorted stably by tick.

    Gaps longer than a delta time can hold are bridged with empty text events.
    """
    body = bytearray()
    last_tick = 0
    status = None
    for tick, event in sorted(events, key=lambda pair: pair[0]):
        while tick - last_tick > MAX_DELTA:
            body += vlq(MAX_DELTA) + EMPTY_TEXT
            last_tick += MAX_DELTA
            status = None
        body += vlq(tick - last_tick)
        last_tick = tick
        if event[0] < 0xF0:  # channel message
            if running_status and event[0] == status:
                event = event[1:]
            else:
                status = event[0]
        else:  # meta / sysex events cancel running status
            status = None
        body += event
    if end:
        body += b"\x00" + END_OF_TRACK
    return bytes(body)


@dataclass
class Note:
    pitch: int
    velocity: int  # 1..127
    start: int  # ticks
    end: int  # ticks, >= start
    track: int = 0
    channel: int = 0


@dataclass
class Performance:
    """A MIDI file as a list of notes, tempo changes and pedal events, and how to encode it."""

    notes: list[Note]
    tempos: list[tuple[int, int]] = field(default_factory=list)  # (tick, us per quarter), in track 0
    pedal: list[tuple[int, int, int]] = field(default_factory=list)  # (tick, value, track), channel 0
    fmt: int = 1
    tpq: int = 480
    n_tracks: int = 1
    velocity0_offs: bool = False  # note-offs written as note-ons with velocity 0
    off_velocity: int = 64
    running_status: bool = False

    def track_events(self) -> list[list[tuple[int, bytes]]]:
        tracks: list[list[tuple[int, bytes]]] = [[] for _ in range(self.n_tracks)]
        for tick, tempo in self.tempos:
            tracks[0].append((tick, tempo_event(tempo)))
        for tick, value, track in self.pedal:
            tracks[track].append((tick, bytes([0xB0, 64, value])))
        # Each note's on and off are listed in order; sorting is stable, so a zero-length note's
        # on still precedes its off. Offs go before ons at equal ticks (a re-strike after a release).
        timed = []
        for i, note in enumerate(self.notes):
            on = bytes([0x90 | note.channel, note.pitch, note.velocity])
            if self.velocity0_offs:
                off = bytes([0x90 | note.channel, note.pitch, 0])
            else:
                off = bytes([0x80 | note.channel, note.pitch, self.off_velocity])
            timed.append((note.start, 1, i, note.track, on))
            timed.append((note.end, 0 if note.end > note.start else 2, i, note.track, off))
        for tick, _, _, track, event in sorted(timed, key=lambda t: (t[0], t[1], t[2])):
            tracks[track].append((tick, event))
        return tracks

    def final_tracks(self) -> list[list[tuple[int, bytes]]]:
        """The tracks as written: (tick, event) in file order."""
        tracks = self.track_events()
        if self.fmt == 0:  # one track holding everything
            tracks = [[event for track in tracks for event in track]]
        return [sorted(track, key=lambda pair: pair[0]) for track in tracks]

    def to_bytes(self) -> bytes:
        tracks = self.final_tracks()
        body = b"".join(chunk(b"MTrk", track_bytes(t, self.running_status)) for t in tracks)
        return header(self.fmt, len(tracks), self.tpq) + body

    def longest_track_ticks(self) -> int:
        return max((max((tick for tick, _ in track), default=0) for track in self.final_tracks()), default=0)

    # --- the reference reader ---------------------------------------------------------------

    def seconds(self, ticks: np.ndarray) -> np.ndarray:
        """Tick -> seconds through the tempo map (tempo changes apply from their tick on)."""
        changes = sorted(self.tempos, key=lambda pair: pair[0])
        points = [(0, DEFAULT_TEMPO)]
        for tick, tempo in changes:
            if tick == points[-1][0]:
                points[-1] = (tick, tempo)
            else:
                points.append((tick, tempo))
        ticks = np.asarray(ticks, dtype=np.float64)
        out = np.zeros_like(ticks)
        elapsed = 0.0
        for i, (tick, tempo) in enumerate(points):
            upper = points[i + 1][0] if i + 1 < len(points) else np.inf
            inside = (ticks >= tick) & (ticks < upper)
            out[inside] = elapsed + (ticks[inside] - tick) * tempo / 1e6 / self.tpq
            if np.isfinite(upper):
                elapsed += (upper - tick) * tempo / 1e6 / self.tpq
        return out

    def expected_notes(self):
        """(pitch, velocity, start, end) arrays a correct ``read_notes(..., sustain=False)`` returns.

        Read from the events as written: a note-off (or velocity-0 note-on) ends the oldest sounding
        note of its track, channel and pitch; a note never ended is dropped; drum-channel notes are
        ignored. Then, as ``read_notes`` documents: notes of one pitch starting together are one note
        (the loudest; of equally loud ones, the longest) and a pitch struck again ends its previous note.
        """
        raw = []  # (pitch, velocity, start tick, end tick)
        for track in self.final_tracks():
            sounding: dict[tuple[int, int], list[tuple[int, int]]] = {}
            for tick, event in track:
                kind, channel = event[0] & 0xF0, event[0] & 0x0F
                if kind not in (0x80, 0x90) or channel == DRUM_CHANNEL:
                    continue
                key = (channel, event[1])
                if kind == 0x90 and event[2] > 0:
                    sounding.setdefault(key, []).append((tick, event[2]))
                elif sounding.get(key):
                    start, velocity = sounding[key].pop(0)
                    raw.append((event[1], velocity, start, tick))
        if not raw:
            return (np.zeros(0, np.int64),) * 2 + (np.zeros(0),) * 2
        pitch, velocity, start_tick, end_tick = (np.array(column) for column in zip(*raw))
        # The parser hands out times as float32 seconds: ticks close together at late times coincide.
        start = self.seconds(start_tick).astype(np.float32).astype(np.float64)
        end = self.seconds(end_tick).astype(np.float32).astype(np.float64)
        # Equally loud strikes together: the longest (held until the last release).
        order = sorted(range(len(raw)), key=lambda i: (start[i], pitch[i], -velocity[i], -end[i]))
        result, seen = [], set()
        for i in order:
            if (start[i], pitch[i]) in seen:
                continue
            seen.add((start[i], pitch[i]))
            result.append([pitch[i], velocity[i], start[i], end[i]])
        by_pitch: dict[int, list] = {}
        for row in result:
            by_pitch.setdefault(int(row[0]), []).append(row)
        for rows in by_pitch.values():
            for a, b in zip(rows, rows[1:]):
                a[3] = min(a[3], b[2])
        result.sort(key=lambda row: (row[2], row[0]))
        table = np.array(result, dtype=np.float64).reshape(-1, 4)
        return table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 2], table[:, 3]


def random_performance(rng: random.Random, max_notes: int = 60) -> Performance:
    """A random, well-formed performance (used as fuzz seeds)."""
    n_tracks = rng.randint(1, 4)
    fmt = rng.choice([0, 1, 1, 2]) if n_tracks > 1 else rng.choice([0, 1])
    notes = []
    for _ in range(rng.randint(1, max_notes)):
        start = rng.randint(0, 20_000)
        notes.append(
            Note(
                pitch=rng.randint(0, 127),
                velocity=rng.randint(1, 127),
                start=start,
                end=start + rng.choice([0, rng.randint(1, 2_000)]),
                track=rng.randrange(n_tracks),
                channel=rng.choice([0, 0, 0, rng.randrange(16)]),
            )
        )
    tempos = [(rng.randint(0, 20_000), rng.randint(1, 0xFFFFFF)) for _ in range(rng.randint(0, 3))]
    pedal = [
        (rng.randint(0, 20_000), rng.randint(0, 127), rng.randrange(n_tracks))
        for _ in range(rng.randint(0, 6))
    ]
    return Performance(
        notes=notes,
        tempos=tempos if fmt != 2 else [],
        pedal=pedal,
        fmt=fmt,
        tpq=rng.choice([96, 384, 480, 960, rng.randint(1, 0x7FFF)]),
        n_tracks=n_tracks,
        velocity0_offs=rng.random() < 0.5,
        running_status=rng.random() < 0.5,
    )


def note_table_problem(notes) -> str | None:
    """The note-table contract (docs/CONVENTIONS.md); None when it holds."""
    from piano_gpt.midi import MAX_NOTES, MAX_SECONDS

    if list(notes.columns) != ["pitch", "velocity", "start", "end"]:
        return f"columns {list(notes.columns)}"
    pitch, velocity = notes["pitch"].to_numpy(), notes["velocity"].to_numpy()
    start, end = notes["start"].to_numpy(), notes["end"].to_numpy()
    if not (len(notes) and len(notes) <= MAX_NOTES):
        return f"{len(notes)} notes"
    if [str(t) for t in notes.dtypes] != ["int64", "int64", "float64", "float64"]:
        return f"dtypes {list(notes.dtypes)}"
    if not notes.index.equals(pd.RangeIndex(len(notes))):
        return "index is not 0..n-1"
    if not (np.isfinite(start).all() and np.isfinite(end).all()):
        return "non-finite times"
    if (start < 0).any() or (end < start).any():
        return "negative time or end before start"
    if end.max() > MAX_SECONDS:
        return f"notes last until {end.max()} s"
    if (np.diff(start) < 0).any():
        return "not sorted by start"
    if pitch.min() < 0 or pitch.max() > 127 or velocity.min() < 1 or velocity.max() > 127:
        return "pitch or velocity out of range"
    order = np.lexsort((start, pitch))
    same = pitch[order][1:] == pitch[order][:-1]
    if (end[order][:-1][same] > start[order][1:][same]).any():
        return "overlapping notes of one pitch"
    return None
