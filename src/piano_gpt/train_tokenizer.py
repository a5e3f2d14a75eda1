"""``python -m piano_gpt.train_tokenizer``: the command lives in :mod:`piano_gpt.commands.train_tokenizer`."""

from piano_gpt.commands.train_tokenizer import main

if __name__ == "__main__":
    main()
