"""Piano-GPT: GPT-2 style models for expressive piano performances, and the PIANO benchmark."""

__version__ = "0.1.0"

__all__ = ["PianoGPT", "load"]


def __getattr__(name: str):
    # ``piano_gpt.load`` without importing torch and the model at ``import piano_gpt``
    if name in __all__:
        from piano_gpt import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'piano_gpt' has no attribute {name!r}")
