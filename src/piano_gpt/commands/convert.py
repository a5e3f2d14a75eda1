"""piano-gpt convert OLD.pt OUT_DIR: an original Piano-GPT ``.pt`` checkpoint as a checkpoint directory.

Reads the file without running code (``piano_gpt.train.convert``); the result is what ``generate``,
``eval``, ``piano_eval`` and the dashboards load.
"""

from __future__ import annotations

import argparse

from piano_gpt.train.convert import convert_original_checkpoint


def add_convert_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="the original's .pt file (e.g. midi-gpt2-10M-...-best.pt)")
    parser.add_argument("out_dir", help="the checkpoint folder to write (must not exist)")
    parser.set_defaults(func=convert_command)


def convert_command(args: argparse.Namespace) -> int:
    path = convert_original_checkpoint(args.checkpoint, args.out_dir)
    print(f"converted {args.checkpoint} -> {path}")
    print(f"  generate with it: python -m piano_gpt.generate checkpoint_path={path} prompt_path=<file.mid>")
    return 0
