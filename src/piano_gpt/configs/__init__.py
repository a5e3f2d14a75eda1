"""The Hydra config tree shipped in the package; only the commands and ``train/config.py`` read it."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
