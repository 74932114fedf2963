"""Measurements made on trained models: accuracy splits (and, with calibration, running-statistics error)."""

from normbench.metrics.accuracy import evaluate

__all__ = ["evaluate"]
