"""Optuna sweeps declared in configs/sweep/<name>.yaml: storage, workers, resume."""
