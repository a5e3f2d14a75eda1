"""Training: the loop, checkpoints, config checks."""
