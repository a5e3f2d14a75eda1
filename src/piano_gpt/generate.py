"""``python -m piano_gpt.generate``: the command lives in :mod:`piano_gpt.commands.generate`."""

from piano_gpt.commands.generate import main

if __name__ == "__main__":
    main()
