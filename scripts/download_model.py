"""Download a checkpoint from the Hugging Face Hub into tmp/checkpoints/hub/<name>, verified.

    python scripts/download_model.py <model_filename> [--repo-id ORG/NAME] [--subfolder checkpoints]
                                     [--revision main] [--dest tmp/checkpoints/hub]
    python scripts/download_model.py --list            # the checkpoints the repo holds

``<model_filename>`` is the checkpoint's folder name in the repo (``<subfolder>/<name>/``). The repo
defaults to $PIANO_GPT_HUB_REPO (else epr-labs/piano-gpt); a private repo needs $HF_TOKEN (or
``huggingface-cli login``); with HF_HUB_OFFLINE=1 it is served from huggingface_hub's cache.
Same as ``piano-gpt download`` (piano_gpt.hub.download_checkpoint).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from piano_gpt.commands.cli import run_command
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from piano_gpt.commands.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("download", prog="download_model.py"))
