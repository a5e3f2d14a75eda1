"""``python -m piano_gpt.prepare_tokenizer_dataset``: the command lives in :mod:`piano_gpt.commands.prepare_tokenizer_dataset`."""

from piano_gpt.commands.prepare_tokenizer_dataset import main

if __name__ == "__main__":
    main()
