"""What every layer may ask of the machine: which device to run on, and its peak FLOP/s (for MFU)."""

from __future__ import annotations

import torch

# Peak dense bf16 FLOP/s used for MFU when no figure is given (the CPU figure is a rough 2-core AVX2
# number: give your machine's).
PEAK_FLOPS = {"cuda": 312e12, "cpu": 1e11, "mps": 10e12}
# Data-sheet dense bf16 peaks by GPU name, first match wins (PCIe parts run lower clocks).
GPU_PEAK_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L4", 121e12))


def pick_device(device: str | None = "auto", local_rank: int | None = None) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``. With ``local_rank`` (one process per
    GPU, as torchrun starts them) ``cuda`` becomes that GPU's index, made the current device."""
    device = "auto" if device is None else str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if local_rank is not None and device.startswith("cuda"):
        if device == "cuda":
            # torch.cuda.set_device needs an index: one process per GPU, the local rank's (0 alone).
            device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    return device


def peak_flops(device: str, override: float | None = None) -> float:
    """Peak FLOP/s of ``device``: ``override`` if given, else the GPU's data-sheet figure."""
    if override:
        return float(override)
    device_type = device.split(":")[0]
    if device_type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_FLOPS:
            if key in name:
                return flops
    return PEAK_FLOPS.get(device_type, 1e11)


def hub_unreachable() -> str | None:
    """Why the Hugging Face Hub (``$HF_ENDPOINT``) cannot be reached, in a few words, or None when it
    answers. One request, no retries, ``$HF_HUB_ETAG_TIMEOUT`` seconds at most: huggingface_hub and
    datasets retry for ~30 s and then raise raw transport errors, so callers ask here first."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as error:  # any answer, even an HTTP error status, means it is reachable
        transport = isinstance(error, OSError) or any(
            cls.__name__ in ("TransportError", "ConnectionError") for cls in type(error).__mro__
        )
        if not transport:
            raise
        return f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({error or type(error).__name__})"
    return None
