"""The Hydra config tree shipped in the package; only the commands and ``train/config.py`` read it."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent


def dataset_config(name: str) -> dict:
    """The dataset config ``configs/dataset/<name>.yaml`` as a plain dict (for callers outside Hydra)."""
    from omegaconf import OmegaConf

    path = CONFIG_DIR / "dataset" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (CONFIG_DIR / "dataset").glob("*.yaml"))
        raise ValueError(f"dataset={name}: no such dataset config; known: {', '.join(known)}")
    return dict(OmegaConf.to_container(OmegaConf.load(path), resolve=True))
