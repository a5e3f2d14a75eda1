"""Playing a stream as it is generated: the event timing (fake port, fake clock) and piano-gpt play."""

import numpy as np
import pandas as pd
import torch

from piano_gpt.commands import play as play_module
from piano_gpt.commands.cli import main as cli_main
from piano_gpt.generation import generate_samples
from piano_gpt.generation.playback import Player
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
    save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    start = np.arange(8) * 0.25 + 1.0
    prompt = make_notes([60, 64, 67, 72, 48, 55, 62, 65], [80] * 8, start, start + 0.3)
    write_notes(prompt, tmp_path / "in.mid")
    monkeypatch.setattr(
        play_module, "midi_output", lambda name: (None, "no MIDI output port on this machine")
    )
    out = tmp_path / "live.mid"
    status = cli_main(["play", str(tmp_path / "ckpt"), "--prompt", str(tmp_path / "in.mid"),
                       "--duration", "4", "--seed", "3", "--output", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert status == 0
    assert f"no MIDI output port on this machine: writing the stream to {out} as it goes" in printed
    (expected,) = generate_samples(
        model, tokenizer, read_notes(tmp_path / "in.mid"), seed=3, max_duration=4.0, max_new_tokens=1_000_000
    )
    written = read_notes(out)
    assert len(expected.notes) > 5 and f"wrote {len(expected.notes)} notes" in printed
    np.testing.assert_array_equal(written["pitch"], expected.notes["pitch"])
    np.testing.assert_allclose(written["start"], expected.notes["start"], atol=2e-3)
    pd.testing.assert_index_equal(written.columns, expected.notes.columns)
