"""Playing a stream of notes as it is generated: note on / note off events sent at their times.

:class:`Player` takes note tables as they come (from :func:`~piano_gpt.generation.stream`, in any
order of start) and sends each note's ``note_on`` at its start and ``note_off`` at its end, on a wall
clock that starts ``lead`` seconds after the first notes arrive, so the generator stays ahead of the
music. A note that arrives after its start time (the generator fell behind) is played at once and
counted as late. The port is anything with ``note_on(pitch, velocity)`` and ``note_off(pitch)``
(:class:`MidoPort` wraps a ``mido`` output); the clock and the sleep are arguments, so the timing is
tested with a fake clock.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

import pandas as pd

LEAD_SECONDS = 0.5  # what the generator may fall behind before a note comes late


class Player:
    """Schedules the notes it is given on ``port``; ``music_origin``: the music time (seconds, on the
    notes' clock) that plays at the wall clock's start."""

    def __init__(
        self,
        port,
        music_origin: float = 0.0,
        lead: float = LEAD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.port, self.music_origin, self.lead = port, float(music_origin), float(lead)
        self.clock, self.sleep = clock, sleep
        self.wall_origin: float | None = None  # wall time of music_origin, set by the first notes
        self.events: list[
            tuple[float, int, int, int, int]
        ] = []  # (music time, off first, order, pitch, velocity)
        self.order = 0
        self.sounding: set[int] = set()
        self.late = 0
        self.played = 0

    def add(self, notes: pd.DataFrame) -> None:
        """Queue ``notes`` and send whatever is due."""
        if self.wall_origin is None and len(notes):
            self.wall_origin = self.clock() + self.lead
        now = self.music_now()
        for pitch, velocity, start, end in notes[["pitch", "velocity", "start", "end"]].itertuples(
            index=False
        ):
            if now is not None and start < now:
                self.late += 1
                start = now
                end = max(end, now)
            # At one time, note offs go first: a key released and struck again at once sounds again.
            heapq.heappush(self.events, (float(start), 1, self.order, int(pitch), int(velocity)))
            heapq.heappush(self.events, (float(end), 0, self.order, int(pitch), 0))
            self.order += 1
        self.send_due()

    def music_now(self) -> float | None:
        if self.wall_origin is None:
            return None
        return self.music_origin + (self.clock() - self.wall_origin)

    def send_due(self) -> None:
        """Send every event whose time has come."""
        now = self.music_now()
        while self.events and now is not None and self.events[0][0] <= now:
            _, is_on, _, pitch, velocity = heapq.heappop(self.events)
            if is_on:
                if pitch in self.sounding:  # a key still held: lift it first
                    self.port.note_off(pitch)
                self.port.note_on(pitch, velocity)
                self.sounding.add(pitch)
                self.played += 1
            elif pitch in self.sounding:
                self.port.note_off(pitch)
                self.sounding.discard(pitch)

    def finish(self) -> None:
        """Wait for and send every queued event (the end of the music)."""
        while self.events:
            if self.wall_origin is None:
                self.wall_origin = self.clock()
            wait = self.events[0][0] - self.music_now()
            if wait > 0:
                self.sleep(wait)
            self.send_due()

    def stop(self) -> None:
        """Silence: every held key is lifted and nothing more is sent (Ctrl-C)."""
        self.events = []
        for pitch in sorted(self.sounding):
            self.port.note_off(pitch)
        self.sounding = set()


class MidoPort:
    """A ``mido`` output port as :class:`Player` uses it."""

    def __init__(self, port):
        import mido

        self.port, self.message = port, mido.Message

    def note_on(self, pitch: int, velocity: int) -> None:
        self.port.send(self.message("note_on", note=pitch, velocity=velocity))

    def note_off(self, pitch: int) -> None:
        self.port.send(self.message("note_off", note=pitch, velocity=0))

    def close(self) -> None:
        self.port.close()
