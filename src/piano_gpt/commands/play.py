"""piano-gpt play CHECKPOINT [--prompt IN.mid] [--port NAME] [--output OUT.mid] [--duration 30] ...

Continues a prompt and plays the continuation while it is generated: to a MIDI output port (``mido``
with ``python-rtmidi``: ``pip install 'piano-gpt[play]'``; ``--port`` names one, default the first),
each note sent when its time comes (``generation.playback.Player``). Without a MIDI output it writes
the stream to ``--output`` as it goes (the file holds every note final so far, rewritten at most every
``REWRITE_SECONDS``) and says so. Ctrl-C stops the music (every key lifted) and keeps the file.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

from piano_gpt.commands.base import CommandError

REWRITE_SECONDS = 1.0
DEFAULT_OUTPUT = "tmp/generated/play.mid"


def add_play_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint folder (with manifest.json)")
    parser.add_argument("--prompt", default=None, help="MIDI file to continue (default: start from nothing)")
    parser.add_argument("--prompt-notes", type=int, default=None, help="use only its first N notes")
    parser.add_argument("--port", default=None, help="MIDI output port name (default: the first one)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="the file written without a MIDI output")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of music to generate")
    parser.add_argument("--seed", type=int, default=0)
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


def play_command(args: argparse.Namespace) -> int:
    from piano_gpt.common import pick_device
    from piano_gpt.generation import ContinuationStream, GenerationConfig
    from piano_gpt.generation.playback import Player
    from piano_gpt.generation.streaming import notes_table
    from piano_gpt.midi import read_notes, write_notes
    from piano_gpt.train.checkpoint import load_checkpoint

    if not Path(args.checkpoint).exists():
        raise CommandError(f"{args.checkpoint}: no such checkpoint folder")
    prompt = read_notes(args.prompt) if args.prompt else None
    if prompt is not None and args.prompt_notes:
        prompt = prompt.iloc[: args.prompt_notes].reset_index(drop=True)
    model, tokenizer, _ = load_checkpoint(args.checkpoint, device=pick_device("auto"))
    config = GenerationConfig(
        seed=args.seed,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        max_new_tokens=1_000_000,
        max_duration=args.duration,
    )
    continuation = ContinuationStream(model, tokenizer, prompt, config, composer=args.composer)
    port, why_not = midi_output(args.port)
    output = Path(args.output)
    prompt_end = float(continuation.prompt["end"].max()) if len(continuation.prompt) else 0.0
    player = Player(port, music_origin=prompt_end) if port is not None else None
    if port is None:
        print(f"{why_not}: writing the stream to {output} as it goes", flush=True)
        output.parent.mkdir(parents=True, exist_ok=True)
    so_far, written = [], time.monotonic()

    def write() -> None:
        write_notes(
            notes_table(so_far), output, metadata={"generator": "piano-gpt play", "seed": str(args.seed)}
        )

    interrupted = False
    try:
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
            port.close()
    if port is None:
        write()
    if player is not None:
        done = f"played {player.played} notes ({player.late} came late)"
    else:
        done = f"wrote {len(so_far)} notes to {output}"
    print(f"interrupted (Ctrl-C): {done}" if interrupted else done)
    return 130 if interrupted else 0
