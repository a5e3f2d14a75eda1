"""Note tables -> sound (WAV bytes) and MIDI bytes, offline.

:func:`render_wav` picks the best renderer that works on this machine, never touching the network:

1. ``"soundfont"``: a General MIDI SoundFont on local disk (``$PIANO_GPT_SOUNDFONT``, then the
   standard Debian/Ubuntu/Fedora/Arch/Homebrew places, e.g. ``/usr/share/sounds/sf2/FluidR3_GM.sf2``
   from the Debian package ``fluid-soundfont-gm``) played on program 0, acoustic grand piano, by
   symusic's built-in synthesizer (``symusic.Synthesizer``, prestosynth) or, where that cannot
   render, by the ``fluidsynth`` program (Debian package ``fluidsynth``), run on a temporary MIDI
   file. symusic's ``BuiltInSF3`` is never used: it downloads its SoundFont at run time.
2. ``"numpy"``: a small additive piano-like synthesizer in pure numpy that always works: each note
   is a sum of (slightly inharmonic) partials with a fast attack and an exponential decay that is
   quicker for higher partials and higher pitches, a damper release after the note's end, velocity
   setting both loudness and brightness. It sounds like an electric piano rather than a Steinway,
   but it makes every rhythm, voicing and dynamic audible without any file or extra package.

``backend="auto"`` (the default) tries the SoundFont first and falls back to numpy when no SoundFont
is found or neither symusic's synthesizer nor fluidsynth can render it (symusic 0.6.0 wheels, for
one, ship a ``Synthesizer.render`` that raises ``TypeError`` on every call); :func:`audio_backend`
says which one ``auto`` uses and why. Output: 16-bit PCM WAV, mono for numpy, stereo for the
SoundFont.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import pandas as pd

from piano_gpt.midi import notes_to_score

SOUNDFONT_ENV = "PIANO_GPT_SOUNDFONT"
SOUNDFONT_PATHS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/sounds/sf3/default-GM.sf3",
    "/usr/share/sounds/sf3/MuseScore_General.sf3",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM2-2.sf2",
    "/usr/share/soundfonts/freepats-general-midi.sf2",
    "/usr/local/share/soundfonts/default.sf2",
    "/opt/homebrew/share/soundfonts/default.sf2",
)
MAX_RENDER_SECONDS = 600.0  # longer tables are cut: a dashboard should not hang on a whole recital
NOTE_TAIL_SECONDS = 4.0  # the numpy synth lets a held note ring at most this long
RELEASE_SECONDS = 0.12
MIN_NOTE_SECONDS = 0.02  # a shorter note is held this long: a click would not sound like a key
SOUNDFONT_TAIL_SECONDS = 1.0  # a SoundFont render is cut this long after the last note ends
FLUIDSYNTH_TIMEOUT_SECONDS = 300


def find_soundfont() -> Path | None:
    """The SoundFont to use: ``$PIANO_GPT_SOUNDFONT`` if it names a file, else the first standard
    path that exists, else None. (Setting the variable to an empty string or ``none`` disables it.)"""
    configured = os.environ.get(SOUNDFONT_ENV)
    if configured is not None:
        if configured.strip().lower() in ("", "none", "0", "off"):
            return None
        path = Path(configured).expanduser()
        return path if path.is_file() else None
    for candidate in SOUNDFONT_PATHS:
        path = Path(candidate)
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=4)
def _synthesizer(path: str, sample_rate: int):
    """A symusic synthesizer for a local SoundFont, checked by rendering one note."""
    import symusic

    synth = symusic.core.Synthesizer(path, sample_rate, 0)
    probe = pd.DataFrame({"pitch": [60], "velocity": [80], "start": [0.0], "end": [0.1]})
    np.asarray(synth.render(notes_to_score(probe), True))  # raises where the binding is broken
    return synth


@functools.lru_cache(maxsize=8)  # loading a 140 MB SoundFont to learn it fails is slow: once per font
def _symusic_problem(path: Path, sample_rate: int) -> str | None:
    try:
        _synthesizer(str(path), int(sample_rate))
    except Exception as error:  # any failure of the native synthesizer means: try the next renderer
        first_line = (str(error).splitlines() or [""])[0][:120]
        return f"symusic's synthesizer fails with {path.name}: {type(error).__name__}: {first_line}"
    return None


def _is_soundfont_file(path: Path) -> bool:
    """A RIFF ``sfbk`` file (.sf2 and .sf3): fluidsynth renders anything else with its default font."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(12)
    except OSError:
        return False
    return header[:4] == b"RIFF" and header[8:12] == b"sfbk"


def fluidsynth_program() -> str | None:
    """The ``fluidsynth`` program on PATH (None when it is not installed)."""
    return shutil.which("fluidsynth")


@functools.lru_cache(maxsize=1)
def _fluidsynth_version(program: str) -> str:
    try:
        out = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    words = (out.splitlines() or [""])[0].split()
    return words[-1] if words else ""


def soundfont_renderer(
    path: str | os.PathLike | None = None, sample_rate: int = 22050
) -> tuple[str | None, str]:
    """(renderer, why) for a SoundFont: ``"symusic"`` or ``"fluidsynth"``, or (None, the problem)."""
    path = Path(path) if path is not None else find_soundfont()
    if path is None:
        return None, (
            f"no General MIDI SoundFont found (set {SOUNDFONT_ENV} or apt-get install fluid-soundfont-gm)"
        )
    symusic_problem = _symusic_problem(path, sample_rate)
    if symusic_problem is None:
        return "symusic", f"SoundFont {path} via symusic"
    program = fluidsynth_program()
    if program is None:
        return None, f"{symusic_problem}; no fluidsynth program (apt-get install fluidsynth)"
    if not _is_soundfont_file(path):
        return None, f"{symusic_problem}; {path} is not a SoundFont (no RIFF sfbk header) for fluidsynth"
    version = _fluidsynth_version(program)
    return "fluidsynth", f"SoundFont {path} via fluidsynth {version}".rstrip()


def soundfont_problem(path: str | os.PathLike | None = None, sample_rate: int = 22050) -> str | None:
    """Why the SoundFont renderer cannot be used (None when it can)."""
    renderer, why = soundfont_renderer(path, sample_rate)
    return None if renderer is not None else why


def audio_backend(sample_rate: int = 22050) -> tuple[str, str]:
    """(backend, description) that ``render_wav(backend="auto")`` uses on this machine."""
    renderer, why = soundfont_renderer(find_soundfont(), sample_rate)
    if renderer is not None:
        return "soundfont", why
    return "numpy", f"built-in numpy piano synthesizer ({why})"


def _clip_notes(notes: pd.DataFrame, max_seconds: float) -> pd.DataFrame:
    notes = notes[notes["start"] < max_seconds]
    if len(notes):
        notes = notes.assign(end=np.minimum(notes["end"], max_seconds))
    return notes


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV of float samples in [-1, 1], shape (n,) or (channels, n)."""
    samples = np.atleast_2d(np.asarray(samples, dtype=np.float32))
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).round().astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(pcm.shape[0])
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(np.ascontiguousarray(pcm.T).tobytes())
    return buffer.getvalue()


def _normalise(samples: np.ndarray, peak: float = 0.9) -> np.ndarray:
    top = float(np.max(np.abs(samples))) if samples.size else 0.0
    return samples * (peak / top) if top > peak else samples


def piano_tone(pitch: int, n_samples: int, sample_rate: int = 22050) -> tuple[np.ndarray, np.ndarray]:
    """The numpy synthesizer's tone for one key, its first ``n_samples``: ``(soft, bright)`` float64
    waves; a strike at velocity ``v`` (0-1) sounds ``soft + v * bright``, scaled by :func:`note_gain`.
    The offline renderer and the live player (``generation.playback.SoundDevicePort``) both use it."""
    t = np.arange(n_samples) / sample_rate
    attack = np.minimum(t / 0.004, 1.0)
    partials = np.arange(1, 9, dtype=np.float64)
    f0 = 440.0 * 2.0 ** ((pitch - 69) / 12)
    # Piano strings are slightly stiff: partial k sits at k * f0 * sqrt(1 + B k^2).
    freqs = partials * f0 * np.sqrt(1 + 1e-4 * partials**2)
    keep = freqs < 0.45 * sample_rate
    freqs, ks = freqs[keep], partials[keep]
    decay = 0.6 + 0.9 * (f0 / 261.6) ** 0.6  # 1/s: low notes ring longer
    phases = 2 * np.pi * np.outer(freqs, t)
    envelopes = np.exp(-np.outer(decay * (1 + 0.5 * (ks - 1)), t))
    tones = np.sin(phases) * envelopes
    soft = (tones * (1.0 / ks**2)[:, None]).sum(0)  # mellow: energy in the low partials
    bright = (tones * (1.0 / ks)[:, None]).sum(0) - soft  # what a hard strike adds on top
    return soft * attack, bright * attack


def note_gain(velocity):
    """Loudness of a strike at ``velocity`` (0-1) before the limiter."""
    return 0.25 * velocity**1.5


def limit(samples: np.ndarray) -> np.ndarray:
    """A gentle limiter: keeps chords from clipping while quiet passages keep their level. It gives at
    most :data:`LIMIT_PEAK` (about 1.2): the offline renderer normalises afterwards, the live player
    divides by it."""
    return np.tanh(samples * 1.2) / np.tanh(1.2)


LIMIT_PEAK = float(1 / np.tanh(1.2))


def synthesize_numpy(notes: pd.DataFrame, sample_rate: int = 22050) -> np.ndarray:
    """The additive piano-like synthesizer: mono float32 samples in [-1, 1] (see the module doc)."""
    sample_rate = int(sample_rate)
    if len(notes) == 0:
        return np.zeros(int(0.1 * sample_rate), np.float32)
    start = np.maximum(notes["start"].to_numpy(np.float64), 0.0)
    end = np.maximum(notes["end"].to_numpy(np.float64), start + MIN_NOTE_SECONDS)
    pitch = np.clip(notes["pitch"].to_numpy(np.int64), 0, 127)
    velocity = np.clip(notes["velocity"].to_numpy(np.float64), 1, 127) / 127.0
    total = int((end.max() + RELEASE_SECONDS + 0.05) * sample_rate) + 1
    out = np.zeros(total, np.float64)

    ring = np.minimum(end - start, NOTE_TAIL_SECONDS)
    lengths = ((ring + RELEASE_SECONDS) * sample_rate).astype(np.int64) + 1
    longest = int(lengths.max())
    waves = {int(p): piano_tone(int(p), longest, sample_rate) for p in np.unique(pitch)}

    n_release = int(RELEASE_SECONDS * sample_rate)
    for onset, p, v, ring_s, n in zip(start, pitch, velocity, ring, lengths):
        soft, bright = waves[int(p)]
        tone = soft[:n] + v * bright[:n]
        held = int(ring_s * sample_rate)
        if n > held:  # the damper: a short fade after the key is released
            fade = np.linspace(1.0, 0.0, min(n - held, n_release) + 1)[1:]
            tone = tone[: held + len(fade)] * np.concatenate([np.ones(held), fade])
        first = int(onset * sample_rate)
        stop = min(first + len(tone), total)
        out[first:stop] += note_gain(v) * tone[: stop - first]
    return _normalise(limit(out)).astype(np.float32)


def synthesize_soundfont(
    notes: pd.DataFrame, soundfont: str | os.PathLike, sample_rate: int = 22050
) -> np.ndarray:
    """Stereo float32 samples ``(2, n)`` of ``notes`` on a local SoundFont (piano program), rendered by
    symusic or, where symusic cannot, by fluidsynth; cut :data:`SOUNDFONT_TAIL_SECONDS` after the end."""
    if len(notes) == 0:
        return np.zeros((2, int(0.1 * sample_rate)), np.float32)
    renderer, why = soundfont_renderer(soundfont, sample_rate)
    if renderer == "symusic":
        audio = np.asarray(
            _synthesizer(str(soundfont), int(sample_rate)).render(notes_to_score(notes), True), np.float32
        )
    elif renderer == "fluidsynth":
        audio = _render_fluidsynth(notes, Path(soundfont), int(sample_rate))
    else:
        raise RuntimeError(why)
    frames = int((float(notes["end"].max()) + SOUNDFONT_TAIL_SECONDS) * sample_rate)
    audio = audio[:, :frames]
    if audio.shape[1] < frames:
        audio = np.pad(audio, ((0, 0), (0, frames - audio.shape[1])))
    fade = min(int(0.05 * sample_rate), frames)  # no click where the reverb tail is cut
    audio[:, frames - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return _normalise(audio)


def _render_fluidsynth(notes: pd.DataFrame, soundfont: Path, sample_rate: int) -> np.ndarray:
    """The ``fluidsynth`` program renders a temporary MIDI file into raw float samples: (2, n) float32
    (floats, so loud chords are scaled down by :func:`_normalise` instead of clipped)."""
    with tempfile.TemporaryDirectory(prefix="piano_gpt_audio_") as folder:
        midi_path, raw_path = Path(folder) / "notes.mid", Path(folder) / "notes.raw"
        midi_path.write_bytes(midi_bytes(notes))
        command = [
            fluidsynth_program() or "fluidsynth",
            "-n",
            "-i",
            "-q",
            "-g",
            "1.0",
            "-r",
            str(sample_rate),
        ]
        command += [
            "-F",
            str(raw_path),
            "-T",
            "raw",
            "-O",
            "float",
            "-E",
            "little",
            str(soundfont),
            str(midi_path),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=FLUIDSYNTH_TIMEOUT_SECONDS)
        if done.returncode != 0 or not raw_path.is_file():
            detail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
            raise RuntimeError(f"fluidsynth failed (exit {done.returncode}): {detail}")
        samples = np.fromfile(raw_path, dtype="<f4")
    return samples[: len(samples) // 2 * 2].reshape(-1, 2).T.copy()


def render_wav(
    notes: pd.DataFrame,
    path: str | os.PathLike | None = None,
    sample_rate: int = 22050,
    backend: str = "auto",
    soundfont: str | os.PathLike | None = None,
    max_seconds: float = MAX_RENDER_SECONDS,
) -> bytes:
    """Render ``notes`` to WAV bytes (and write them to ``path`` when given).

    ``backend``: ``"auto"`` (SoundFont when one is found and symusic or fluidsynth can render it, else numpy),
    ``"soundfont"`` (error when unavailable) or ``"numpy"``. ``soundfont`` overrides the search.
    Notes starting after ``max_seconds`` are left out.
    """
    if backend not in ("auto", "soundfont", "numpy"):
        raise ValueError(f"unknown audio backend {backend!r}: use auto, soundfont or numpy")
    notes = _clip_notes(notes, float(max_seconds))
    samples = None
    if backend in ("auto", "soundfont"):
        font = Path(soundfont) if soundfont is not None else find_soundfont()
        problem = soundfont_problem(font, sample_rate) if font is not None else "no SoundFont found"
        if problem is None:
            samples = synthesize_soundfont(notes, font, sample_rate)
        elif backend == "soundfont":
            raise RuntimeError(problem)
    if samples is None:
        samples = synthesize_numpy(notes, sample_rate)
    data = wav_bytes(samples, sample_rate)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return data


def write_wav(notes: pd.DataFrame, path: str | os.PathLike, sample_rate: int = 22050) -> str:
    """Render ``notes`` into the WAV file ``path`` as ``render_wav`` does; returns which renderer it
    used, in words (for a command's log line)."""
    backend, description = audio_backend(sample_rate)
    render_wav(notes, path, sample_rate=sample_rate, backend=backend)
    return description


def midi_bytes(notes: pd.DataFrame) -> bytes:
    """A standard MIDI file of ``notes`` (one piano track, as ``piano_gpt.midi.write_notes``), in memory."""
    return bytes(notes_to_score(notes).dumps_midi())


__all__ = [
    "LIMIT_PEAK",
    "SOUNDFONT_ENV",
    "SOUNDFONT_PATHS",
    "audio_backend",
    "find_soundfont",
    "limit",
    "fluidsynth_program",
    "midi_bytes",
    "note_gain",
    "piano_tone",
    "render_wav",
    "soundfont_problem",
    "soundfont_renderer",
    "synthesize_numpy",
    "synthesize_soundfont",
    "wav_bytes",
    "write_wav",
]
