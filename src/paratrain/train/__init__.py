"""The training loop and what it writes: checkpoints, metrics, progress, the run directory."""
