"""``python -m piano_gpt.cli``: the command lives in :mod:`piano_gpt.commands.cli`."""

from piano_gpt.commands.cli import main

if __name__ == "__main__":
    main()
