"""``python -m piano_gpt.demo``: the command lives in :mod:`piano_gpt.commands.demo`."""

from piano_gpt.commands.demo import main

if __name__ == "__main__":
    main()
