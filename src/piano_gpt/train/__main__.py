"""``python -m piano_gpt.train``: the command lives in :mod:`piano_gpt.commands.train`."""

from piano_gpt.commands.train import main

if __name__ == "__main__":
    main()
