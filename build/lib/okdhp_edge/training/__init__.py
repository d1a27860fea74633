"""Training: trainer, checkpoints, distributed helpers."""
