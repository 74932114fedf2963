"""The run's Lightning glue: the classification module, the callbacks that measure, and the W&B run logger.

module.py (Classifier), callbacks.py (throughput, per-epoch evaluation), measurements.py (running-statistics
calibration, accuracy split and ECE after epochs), accumulation.py (optimizer-step boundaries for
accumulation-aware norms), wandb.py (the logger `logger=wandb` builds).
"""

from normbench.training.callbacks import EpochEvaluator, ThroughputMonitor
from normbench.training.module import Classifier

__all__ = ["Classifier", "EpochEvaluator", "ThroughputMonitor"]
