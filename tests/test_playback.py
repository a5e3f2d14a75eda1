"""Playing a stream as it is generated: the event timing (fake port, fake clock), the sound device port
(a fake ``sounddevice`` module whose stream hands its callback to the test) and piano-gpt play."""

import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from piano_gpt.audio import LIMIT_PEAK, RELEASE_SECONDS, synthesize_numpy
from piano_gpt.commands import play as play_module
from piano_gpt.commands.base import CommandError
from piano_gpt.commands.cli import main as cli_main
from piano_gpt.generation import generate_samples, playback
from piano_gpt.generation.playback import Player, SoundDevicePort
from piano_gpt.midi import make_notes, read_notes, write_notes
from piano_gpt.model import GPT, GPTConfig
from piano_gpt.tokenizers import ExponentialTimeTokenizer
from piano_gpt.train.checkpoint import save_checkpoint


class FakeClock:
    def __init__(self, now=10.0):
        self.now = now

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class FakePort:
    def __init__(self, clock):
        self.clock, self.sent = clock, []

    def note_on(self, pitch, velocity):
        self.sent.append((round(self.clock.now, 6), "on", pitch, velocity))

    def note_off(self, pitch):
        self.sent.append((round(self.clock.now, 6), "off", pitch, 0))


def notes(*rows):
    pitch, velocity, start, end = zip(*rows)
    return make_notes(pitch, velocity, start, end)


def test_events_are_sent_at_their_times():
    clock = FakeClock(10.0)
    port = FakePort(clock)
    player = Player(port, music_origin=2.0, lead=0.5, clock=clock, sleep=clock.sleep)
    # Music time 2.0 plays at wall 10.5 (the first notes came at 10.0, plus the lead).
    player.add(notes((62, 70, 2.25, 3.0), (60, 80, 2.0, 2.5)))
    assert port.sent == []  # nothing is due before the lead has passed
    clock.now = 10.6
    player.add(notes((64, 90, 2.5, 2.75), (64, 50, 2.75, 3.0)))  # one key struck again as it is released
    assert port.sent == [(10.6, "on", 60, 80)]  # due at 10.5, sent when the loop came by
    player.finish()
    assert port.sent[1:] == [
        (10.75, "on", 62, 70),
        (11.0, "off", 60, 0),
        (11.0, "on", 64, 90),
        (11.25, "off", 64, 0),  # the release goes before the new strike at the same time
        (11.25, "on", 64, 50),
        (11.5, "off", 62, 0),
        (11.5, "off", 64, 0),
    ]
    assert player.late == 0 and player.played == 4


def test_a_note_that_comes_late_is_played_at_once_and_counted():
    clock = FakeClock(0.0)
    port = FakePort(clock)
    player = Player(port, music_origin=0.0, lead=0.2, clock=clock, sleep=clock.sleep)
    player.add(notes((60, 80, 0.0, 1.0)))
    clock.now = 0.7  # music time 0.5
    player.add(notes((67, 80, 0.3, 0.6), (69, 80, 0.4, 0.45)))
    assert player.late == 2
    assert port.sent[-2:] == [(0.7, "on", 67, 80), (0.7, "on", 69, 80)]
    player.stop()  # Ctrl-C: every held key is lifted at once
    assert sorted(port.sent[-3:]) == [(0.7, "off", 60, 0), (0.7, "off", 67, 0), (0.7, "off", 69, 0)]
    player.finish()
    assert len(port.sent) == 6  # nothing more after a stop


def test_play_without_a_midi_output_writes_the_stream_to_a_file(tmp_path, monkeypatch, capsys):
    tokenizer = ExponentialTimeTokenizer()
    torch.manual_seed(0)
    config = GPTConfig(block_size=64, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32)
    model = GPT(config).eval()
    with torch.no_grad():  # logits of a few units: bfloat16's rounding changes what is drawn
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 1.0 / parameter.size(1) ** 0.5)
    save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    start = np.arange(8) * 0.25 + 1.0
    prompt = make_notes([60, 64, 67, 72, 48, 55, 62, 65], [80] * 8, start, start + 0.3)
    write_notes(prompt, tmp_path / "in.mid")
    monkeypatch.setattr(
        play_module, "midi_output", lambda name: (None, "no MIDI output port on this machine")
    )
    monkeypatch.setattr(play_module, "sound_output", lambda: (None, "no sound output device on this machine"))
    out = tmp_path / "live.mid"
    status = cli_main(["play", str(tmp_path / "ckpt"), "--prompt", str(tmp_path / "in.mid"),
                       "--duration", "4", "--seed", "3", "--output", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert status == 0
    assert "no MIDI output port on this machine: trying the sound device\n" in printed
    assert f"no sound output device on this machine: writing the stream to {out} as it goes" in printed
    assert "decoding in bfloat16 (--precision float32: the notes `generate` draws for seed 3)\n" in printed
    # By default the model plays in bfloat16: the notes generate draws from that model for the seed.
    bfloat16 = GPT(config).eval()
    bfloat16.load_state_dict(model.state_dict())
    (expected,) = generate_samples(
        bfloat16.to(torch.bfloat16), tokenizer, read_notes(tmp_path / "in.mid"), seed=3, max_duration=4.0,
        max_new_tokens=1_000_000,
    )  # fmt: skip
    written = read_notes(out)
    assert len(expected.notes) > 5 and f"wrote {len(expected.notes)} notes" in printed
    np.testing.assert_array_equal(written["pitch"], expected.notes["pitch"])
    np.testing.assert_allclose(written["start"], expected.notes["start"], atol=2e-3)
    pd.testing.assert_index_equal(written.columns, expected.notes.columns)
    # --precision float32: the model as saved, the notes generate draws for the seed
    status = cli_main(["play", str(tmp_path / "ckpt"), "--prompt", str(tmp_path / "in.mid"), "--duration", "4",
                       "--seed", "3", "--output", str(out), "--precision", "float32"])  # fmt: skip
    assert status == 0
    (expected32,) = generate_samples(
        model, tokenizer, read_notes(tmp_path / "in.mid"), seed=3, max_duration=4.0, max_new_tokens=1_000_000
    )
    np.testing.assert_array_equal(read_notes(out)["pitch"], expected32.notes["pitch"])
    assert expected32.ids.tolist() != expected.ids.tolist()  # the two precisions are two different runs


def fake_sounddevice(monkeypatch, refused_rate=None, has_output=True):
    """A stand-in for the ``sounddevice`` module: its streams keep the callback for the test to pull
    blocks from (no sound hardware, no PortAudio)."""
    module = types.ModuleType("sounddevice")

    class PortAudioError(Exception):
        pass

    class OutputStream:
        def __init__(self, samplerate, callback, channels, **options):
            if samplerate == refused_rate:
                raise PortAudioError("Invalid sample rate [PaErrorCode -9997]")
            self.samplerate, self.callback, self.channels = samplerate, callback, channels
            self.started = self.closed = False
            module.streams.append(self)

        def start(self):
            self.started = True

        def stop(self):
            self.started = False

        def close(self):
            self.closed = True

    def query_devices(device=None, kind=None):
        if not has_output:
            raise PortAudioError("Error querying device -1")
        return {"name": "Fake speakers", "default_samplerate": 48000.0}

    module.PortAudioError, module.OutputStream, module.query_devices = (
        PortAudioError,
        OutputStream,
        query_devices,
    )
    module.streams = []
    monkeypatch.setitem(sys.modules, "sounddevice", module)
    return module


def pull(port, seconds, block=512):
    """What the audio thread would play next: ``seconds`` of samples, block by block."""
    blocks = []
    for _ in range(int(np.ceil(seconds * port.sample_rate / block))):
        outdata = np.full((block, port.stream.channels), np.nan, np.float32)
        port.stream.callback(outdata, block, None, None)
        blocks.append(outdata[:, 0].copy())
    return np.concatenate(blocks)


def peak_frequency(samples, sample_rate):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.fft.rfftfreq(len(samples), 1 / sample_rate)[np.argmax(spectrum)]


def unlimited(samples):
    """The mix before the live limiter (tanh(1.2 x)) undone."""
    return np.arctanh(samples.astype(np.float64)) / 1.2


def test_sound_device_port_sounds_a_key_and_its_damper(monkeypatch):
    fake_sounddevice(monkeypatch)
    port = SoundDevicePort(prepare=())
    assert port.stream.started and port.sample_rate == 22050
    assert np.all(pull(port, 0.1) == 0.0)  # no voices: silence
    port.note_on(69, 100)
    held = pull(port, 0.5)
    assert abs(peak_frequency(held, 22050) - 440.0) < 3.0 and np.abs(held).max() > 0.1
    port.note_off(69)
    released = pull(port, RELEASE_SECONDS)
    assert np.abs(released[:256]).max() > 0.05  # the damper fades the string, it does not cut it
    assert np.abs(released[-256:]).max() < 1e-3 and port.voices == []
    assert np.all(pull(port, 0.1) == 0.0)
    port.close()
    assert port.stream.closed


def test_sound_device_port_plays_what_the_offline_renderer_renders(monkeypatch):
    fake_sounddevice(monkeypatch)
    port = SoundDevicePort(prepare=())
    port.note_on(60, 80)
    live = pull(port, 1.0, block=2205)  # the key is lifted at exactly 1.0 s
    port.note_off(60)
    live = np.concatenate([live, pull(port, RELEASE_SECONDS + 0.1, block=2205)])
    offline = synthesize_numpy(notes((60, 80, 0.0, 1.0)), 22050)  # quiet: not normalised
    assert np.abs(offline).max() < 0.9
    # Live, the limiter is scaled to peak at 1 (offline, the whole file is normalised instead).
    np.testing.assert_allclose(live[: len(offline)] * LIMIT_PEAK, offline, atol=3e-6)
    assert np.abs(live[len(offline) :]).max() < 1e-6


def test_sound_device_port_mixes_keys_and_limits_the_mix(monkeypatch):
    fake_sounddevice(monkeypatch)
    alone = []
    for pitch in (60, 64):
        port = SoundDevicePort(prepare=())
        port.note_on(pitch, 90)
        alone.append(pull(port, 0.3))
    both = SoundDevicePort(prepare=())
    both.note_on(60, 90)
    both.note_on(64, 90)
    np.testing.assert_allclose(
        unlimited(pull(both, 0.3)), unlimited(alone[0]) + unlimited(alone[1]), atol=1e-5
    )
    loud = SoundDevicePort(prepare=())
    for pitch in range(48, 78, 3):  # ten keys struck as hard as they go
        loud.note_on(pitch, 127)
    samples = pull(loud, 0.3)
    assert np.abs(samples).max() <= 1.0 and np.abs(samples).max() > 0.95


def test_sound_device_port_takes_the_device_rate_and_lets_a_held_key_ring_out(monkeypatch):
    fake_sounddevice(monkeypatch, refused_rate=22050)
    port = SoundDevicePort(prepare=())
    assert port.sample_rate == 48000
    port.note_on(69, 100)
    assert abs(peak_frequency(pull(port, 0.5), 48000) - 440.0) < 3.0
    pull(port, 3.4)  # a key never lifted rings NOTE_TAIL_SECONDS (4 s), then its damper falls
    assert len(port.voices) == 1
    pull(port, RELEASE_SECONDS + 0.13)
    assert port.voices == []


def test_play_without_a_midi_output_plays_on_the_sound_device(tmp_path, monkeypatch, capsys):
    device = fake_sounddevice(monkeypatch)
    monkeypatch.setitem(sys.modules, "mido", None)  # not installed
    monkeypatch.setitem(sys.modules, "rtmidi", None)
    port = play_module.open_output("auto", None, tmp_path / "out.mid")  # prepares the tones meanwhile
    assert isinstance(port, SoundDevicePort) and device.streams == [port.stream]
    assert capsys.readouterr().out.splitlines() == [
        "mido and python-rtmidi are not installed (pip install 'piano-gpt[play]'): trying the sound device",
        "playing on the sound device: Fake speakers at 22050 Hz",
    ]
    port.close()
    assert not (tmp_path / "out.mid").parent.joinpath("out.mid").exists()


def test_play_falls_back_to_the_file_where_portaudio_is_missing(tmp_path, monkeypatch, capsys):
    (tmp_path / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        play_module, "midi_output", lambda name: (None, "no MIDI output port on this machine")
    )
    out = tmp_path / "new" / "out.mid"
    assert play_module.open_output("auto", None, out) is None
    assert capsys.readouterr().out.splitlines() == [
        "no MIDI output port on this machine: trying the sound device",
        "sounddevice cannot load PortAudio (PortAudio library not found): "
        f"writing the stream to {out} as it goes",
    ]
    assert out.parent.is_dir()
    fake_sounddevice(monkeypatch, has_output=False)
    assert play_module.open_output("auto", None, out) is None
    assert "no sound output device on this machine: writing" in capsys.readouterr().out
    fake_sounddevice(monkeypatch)  # a sound device, but the file is asked for
    assert play_module.open_output("file", None, out) is None
    assert capsys.readouterr().out == f"writing the stream to {out} as it goes\n"


def test_play_to_an_unavailable_destination_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # not installed
    (tmp_path / "ckpt").mkdir()  # never loaded: the destination is checked first
    status = cli_main(["play", str(tmp_path / "ckpt"), "--to", "audio"])
    assert status != 0
    error = capsys.readouterr().err
    assert "--to audio: sounddevice is not installed (pip install 'piano-gpt[play]')" in error
    monkeypatch.setattr(
        play_module, "midi_output", lambda name: (None, "no MIDI output port on this machine")
    )
    with pytest.raises(CommandError, match="--to midi: no MIDI output port on this machine"):
        play_module.open_output("midi", None, tmp_path / "out.mid")
    with pytest.raises(CommandError, match="--port names a MIDI output"):
        play_module.open_output("audio", "Synth", tmp_path / "out.mid")


def test_sound_device_port_prepares_the_tones_before_the_keys_are_struck(monkeypatch):
    fake_sounddevice(monkeypatch)
    port = SoundDevicePort(prepare=[60, 62])
    port.preparing.join()
    assert sorted(port.waves) == [60, 62]
    monkeypatch.setattr(playback, "piano_tone", lambda *args: pytest.fail("a prepared tone was recomputed"))
    port.note_on(62, 80)
    assert np.abs(pull(port, 0.1)).max() > 0.05
