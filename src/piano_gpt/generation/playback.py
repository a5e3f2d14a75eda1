"""Playing a stream of notes as it is generated: note on / note off events sent at their times.

:class:`Player` takes note tables as they come (from :func:`~piano_gpt.generation.stream`, in any
order of start) and sends each note's ``note_on`` at its start and ``note_off`` at its end, on a wall
clock that starts ``lead`` seconds after the first notes arrive, so the generator stays ahead of the
music. A note that arrives after its start time (the generator fell behind) is played at once and
counted as late. The port is anything with ``note_on(pitch, velocity)`` and ``note_off(pitch)``
(:class:`MidoPort` wraps a ``mido`` output; :class:`SoundDevicePort` plays the built-in numpy piano on
the sound device); the clock and the sleep are arguments, so the timing is tested with a fake clock.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from piano_gpt.audio import (
    LIMIT_PEAK,
    MIN_NOTE_SECONDS,
    NOTE_TAIL_SECONDS,
    RELEASE_SECONDS,
    limit,
    note_gain,
    piano_tone,
)

LEAD_SECONDS = 0.5  # what the generator may fall behind before a note comes late
PIANO_KEYS = range(21, 109)  # A0-C8: the sound device port prepares their tones while the model loads


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


@dataclass
class Voice:
    """One struck key on the sound device: positions in samples from its strike."""

    pitch: int
    velocity: float  # 0-1
    position: int = 0  # the next sample to render
    release: int | None = None  # where the damper falls (None: the key is still held)


class SoundDevicePort:
    """The sound device as :class:`Player` uses it: each key struck sounds the numpy piano of
    :mod:`piano_gpt.audio` (the same tone, strike gain, damper and limiter as the offline renderer;
    instead of normalising the whole file, a fixed ``gain`` and the limiter scaled to peak at 1), mixed
    block by block in the callback of a ``sounddevice`` output stream (mono float32, ``sample_rate`` or,
    where the device refuses it, the device's own rate). A key rings at most ``NOTE_TAIL_SECONDS``;
    after its ``note_off`` it fades out over ``RELEASE_SECONDS`` and its voice is dropped. The tones of
    the keys in ``prepare`` (~40 ms each to compute, cached) are computed in a background thread from
    the start, middle keys first, so a first strike seldom waits for its tone."""

    def __init__(
        self,
        sample_rate: int = 22050,
        gain: float = 1.0,
        device=None,
        block_size: int = 512,
        prepare: Iterable[int] = PIANO_KEYS,
    ):
        import sounddevice

        self.gain = float(gain)
        self.voices: list[Voice] = []
        self.waves: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # pitch -> (soft, bright), cached
        self.lock = threading.Lock()  # the caller's thread strikes keys while the audio thread renders
        options = dict(
            channels=1, dtype="float32", callback=self.callback, device=device, blocksize=block_size
        )
        try:
            self.stream = sounddevice.OutputStream(samplerate=sample_rate, **options)
        except sounddevice.PortAudioError:  # the device does not take this rate: use its own
            own_rate = sounddevice.query_devices(device, kind="output")["default_samplerate"]
            self.stream = sounddevice.OutputStream(samplerate=int(own_rate), **options)
        self.sample_rate = int(self.stream.samplerate)
        self.description = (
            f"{sounddevice.query_devices(device, kind='output')['name']} at {self.sample_rate} Hz"
        )
        self.held_limit = int(NOTE_TAIL_SECONDS * self.sample_rate)
        self.min_held = int(MIN_NOTE_SECONDS * self.sample_rate)
        self.n_release = int(RELEASE_SECONDS * self.sample_rate)
        self.closing = threading.Event()
        self.preparing = threading.Thread(target=self.prepare, args=(list(prepare),), daemon=True)
        self.preparing.start()
        self.stream.start()

    def tone(self, pitch: int) -> tuple[np.ndarray, np.ndarray]:
        """One key's (soft, bright) waves, long enough for its longest ring and release; cached."""
        waves = self.waves.get(pitch)
        if waves is None:  # computed outside the lock: the audio thread never waits for it
            soft, bright = piano_tone(pitch, self.held_limit + self.n_release + 1, self.sample_rate)
            waves = self.waves[pitch] = (soft.astype(np.float32), bright.astype(np.float32))
        return waves

    def prepare(self, pitches: list[int]) -> None:
        for pitch in sorted(pitches, key=lambda pitch: abs(pitch - 64)):
            if self.closing.is_set():
                return
            self.tone(pitch)

    def note_on(self, pitch: int, velocity: int) -> None:
        pitch = int(np.clip(pitch, 0, 127))
        self.tone(pitch)
        voice = Voice(pitch, float(np.clip(velocity, 1, 127)) / 127.0)
        with self.lock:
            self.voices.append(voice)

    def note_off(self, pitch: int) -> None:
        with self.lock:
            for voice in self.voices:
                if voice.pitch == pitch and voice.release is None:
                    voice.release = max(voice.position, self.min_held)

    def render(self, frames: int) -> np.ndarray:
        """The next ``frames`` samples of every voice, mixed and limited (float32)."""
        mix = np.zeros(frames)
        with self.lock:
            for voice in self.voices:
                release = self.damper(voice)
                first = voice.position
                last = min(first + frames, release + self.n_release)
                if last > first:
                    soft, bright = self.waves[voice.pitch]
                    tone = soft[first:last] + voice.velocity * bright[first:last]
                    # The damper, as offline: 1 until the release, then down to 0 over n_release samples.
                    index = np.arange(first, last)
                    fade = np.clip(1.0 - (index - release + 1) / self.n_release, 0.0, 1.0)
                    mix[: last - first] += note_gain(voice.velocity) * tone * fade
                voice.position += frames
            self.voices = [voice for voice in self.voices if not self.finished(voice)]
        return (limit(mix * self.gain) / LIMIT_PEAK).astype(np.float32)  # no normalising live: within 1

    def damper(self, voice: Voice) -> int:
        """Where the voice's damper falls: at its release, or when it has rung NOTE_TAIL_SECONDS."""
        return self.held_limit if voice.release is None else min(voice.release, self.held_limit)

    def finished(self, voice: Voice) -> bool:
        return voice.position >= self.damper(voice) + self.n_release

    def callback(self, outdata, frames, time_info, status) -> None:
        outdata[:] = self.render(frames)[:, None]

    def close(self, drain_seconds: float = RELEASE_SECONDS + 0.25) -> None:
        """Let the released keys fade (at most ``drain_seconds``), then close the stream."""
        self.closing.set()
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline:
            with self.lock:
                if not self.voices:
                    break
            time.sleep(0.01)
        self.stream.stop()
        self.stream.close()
