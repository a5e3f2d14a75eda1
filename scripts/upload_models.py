"""Upload checkpoints to the Hugging Face Hub (by default every *-best checkpoint under tmp/runs).

    python scripts/upload_models.py [PATH ...] [--repo-id ORG/NAME] [--subfolder checkpoints]
                                    [--runs-root tmp/runs] [--with-training-state] [--private] [--dry-run]

Each checkpoint is verified (sha256 of every file) before anything is sent, then lands in
``<repo>/<subfolder>/<folder name>/``; by default the weights only (model, config, tokenizer and their
manifest), ``--with-training-state`` adds the optimizer and RNG state. The repo defaults to
$PIANO_GPT_HUB_REPO (else epr-labs/piano-gpt) and is created if missing; the token is $HF_TOKEN (or
``huggingface-cli login``). Same as ``piano-gpt upload`` (piano_gpt.hub.upload_checkpoint).
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
    sys.exit(run_command("upload", prog="upload_models.py"))
