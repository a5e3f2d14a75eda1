"""``python -m piano_gpt.cli``: the command lives in :mod:`piano_gpt.commands.cli`."""

import sys

from piano_gpt.commands.cli import main

if __name__ == "__main__":
    sys.exit(main())
