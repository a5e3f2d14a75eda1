"""``python -m piano_gpt.piano_eval``: the command lives in :mod:`piano_gpt.commands.piano_eval`."""

from piano_gpt.commands.piano_eval import main

if __name__ == "__main__":
    main()
