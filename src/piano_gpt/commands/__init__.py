"""The commands, one module each; the only code (with ``train/config.py``) that reads Hydra configs.

``python -m piano_gpt.<name>`` (the original's spelling) and ``piano-gpt <name>`` run the same
``main``; :mod:`piano_gpt.commands.base` holds the one error wrapper they share.
"""
