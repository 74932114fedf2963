"""Measurements made on trained models: loss, accuracy and ECE over a split (accuracy.py), and the error of the
norm layers' running statistics against population statistics (running_stats.py)."""

from normbench.metrics.accuracy import Evaluation, evaluate

__all__ = ["Evaluation", "evaluate"]
