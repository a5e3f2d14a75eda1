"""``python -m piano_gpt.eval``: the command lives in :mod:`piano_gpt.commands.eval`."""

from piano_gpt.commands.eval import main

if __name__ == "__main__":
    main()
