"""piano-gpt play CHECKPOINT [--prompt IN.mid] [--to auto|midi|audio|file] [--port NAME] [--output F] ...

Continues a prompt and plays the continuation while it is generated, each note sent when its time
comes (``generation.playback.Player``): to a MIDI output port (``mido`` with ``python-rtmidi``:
``pip install 'piano-gpt[play]'``; ``--port`` names one, default the first); without one, on the sound
device through the built-in numpy piano (``sounddevice``, same extra, and the PortAudio library); without
either, it writes the stream to ``--output`` as it goes (the file holds every note final so far,
rewritten at most every ``REWRITE_SECONDS``). Each fallback prints one line saying why; ``--to`` picks
one explicitly (an unavailable one is an error). Ctrl-C stops the music (every key lifted) and keeps
the file.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

from piano_gpt.commands.base import CommandError

REWRITE_SECONDS = 1.0
DEFAULT_OUTPUT = "tmp/generated/play.mid"
DESTINATIONS = ("auto", "midi", "audio", "file")


def add_play_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint folder (with manifest.json)")
    parser.add_argument("--prompt", default=None, help="MIDI file to continue (default: start from nothing)")
    parser.add_argument("--prompt-notes", type=int, default=None, help="use only its first N notes")
    parser.add_argument(
        "--to",
        choices=DESTINATIONS,
        default="auto",
        help="where to play (auto: a MIDI output, else the sound device, else the file)",
    )
    parser.add_argument("--port", default=None, help="MIDI output port name (default: the first one)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="the file written without a MIDI output")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of music to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        default="bfloat16",
        help="the weights' precision (default bfloat16: a CPU step reads half the bytes, 1.3-1.8x faster, "
        "for live playing; float32 plays the notes `generate` draws for the same seed)",
    )
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--composer", default=None, help="composer conditioning, e.g. Chopin")
    parser.set_defaults(func=play_command)


def midi_output(name: str | None):
    """A :class:`~piano_gpt.generation.playback.MidoPort`, or (None, why there is none)."""
    if importlib.util.find_spec("mido") is None or importlib.util.find_spec("rtmidi") is None:
        return None, "mido and python-rtmidi are not installed (pip install 'piano-gpt[play]')"
    import mido

    from piano_gpt.generation.playback import MidoPort

    names = mido.get_output_names()
    if name is not None:
        if name not in names:
            raise CommandError(
                f"--port {name!r}: no such MIDI output; there are: {', '.join(names) or 'none'}"
            )
        return MidoPort(mido.open_output(name)), None
    if not names:
        return None, "no MIDI output port on this machine"
    return MidoPort(mido.open_output(names[0])), None


def sound_output():
    """A :class:`~piano_gpt.generation.playback.SoundDevicePort` on the default output device, or
    (None, why there is none)."""
    try:
        import sounddevice
    except ImportError:
        return None, "sounddevice is not installed (pip install 'piano-gpt[play]')"
    except OSError as error:  # the package is there but the PortAudio C library is not
        return None, f"sounddevice cannot load PortAudio ({(str(error).splitlines() or [''])[0][:120]})"
    try:
        device = sounddevice.query_devices(kind="output")
    except sounddevice.PortAudioError:
        return None, "no sound output device on this machine"
    from piano_gpt.generation.playback import SoundDevicePort

    try:
        return SoundDevicePort(), None
    except sounddevice.PortAudioError as error:
        return None, f"the sound device {device['name']!r} cannot play: {error}"


def open_output(destination: str, port_name: str | None, output: Path):
    """The port to play on for ``--to destination`` (None: write ``output``), printing a line for each
    fallback; an explicitly chosen destination that is unavailable is a :class:`CommandError`."""
    if port_name is not None and destination not in ("auto", "midi"):
        raise CommandError(f"--port names a MIDI output; it does not go with --to {destination}")
    if destination in ("auto", "midi"):
        port, why_not = midi_output(port_name)
        if port is not None:
            return port
        if destination == "midi":
            raise CommandError(f"--to midi: {why_not}")
        print(f"{why_not}: trying the sound device", flush=True)
    if destination in ("auto", "audio"):
        port, why_not = sound_output()
        if port is not None:
            print(f"playing on the sound device: {port.description}", flush=True)
            return port
        if destination == "audio":
            raise CommandError(f"--to audio: {why_not}")
        print(f"{why_not}: writing the stream to {output} as it goes", flush=True)
    else:
        print(f"writing the stream to {output} as it goes", flush=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    return None


def play_command(args: argparse.Namespace) -> int:
    from piano_gpt.common import pick_device
    from piano_gpt.generation import ContinuationStream, GenerationConfig
    from piano_gpt.generation.playback import Player
    from piano_gpt.generation.streaming import notes_table
    from piano_gpt.midi import read_notes, write_notes
    from piano_gpt.pipeline import WEIGHT_DTYPES
    from piano_gpt.train.checkpoint import load_checkpoint

    if not Path(args.checkpoint).exists():
        raise CommandError(f"{args.checkpoint}: no such checkpoint folder")
    prompt = read_notes(args.prompt) if args.prompt else None
    if prompt is not None and args.prompt_notes:
        prompt = prompt.iloc[: args.prompt_notes].reset_index(drop=True)
    output = Path(args.output)
    port = open_output(args.to, args.port, output)
    player = None
    so_far, written = [], time.monotonic()

    def write() -> None:
        write_notes(
            notes_table(so_far), output, metadata={"generator": "piano-gpt play", "seed": str(args.seed)}
        )

    interrupted = False
    try:
        model, tokenizer, _ = load_checkpoint(args.checkpoint, device=pick_device("auto"))
        model = model.to(WEIGHT_DTYPES[args.precision])
        if args.precision != "float32":
            print(
                f"decoding in {args.precision} (--precision float32: the notes `generate` draws for seed {args.seed})",
                flush=True,
            )
        config = GenerationConfig(
            seed=args.seed,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            max_new_tokens=1_000_000,
            max_duration=args.duration,
        )
        continuation = ContinuationStream(model, tokenizer, prompt, config, composer=args.composer)
        prompt_end = float(continuation.prompt["end"].max()) if len(continuation.prompt) else 0.0
        player = Player(port, music_origin=prompt_end) if port is not None else None
        for streamed in continuation:
            so_far += streamed.rows
            if player is not None:
                player.add(streamed.notes)
            elif time.monotonic() - written >= REWRITE_SECONDS:
                write()
                written = time.monotonic()
        if player is not None:
            player.finish()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if player is not None:
            player.stop()
        if port is not None:
            port.close()
    if port is None:
        write()
    if port is not None:
        played, late = (player.played, player.late) if player is not None else (0, 0)
        done = f"played {played} notes ({late} came late)"
    else:
        done = f"wrote {len(so_far)} notes to {output}"
    print(f"interrupted (Ctrl-C): {done}" if interrupted else done)
    return 130 if interrupted else 0
