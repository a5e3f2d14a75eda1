"""Piano-GPT: GPT-2 style models for expressive piano performances, and the PIANO benchmark."""

__version__ = "0.1.0"
