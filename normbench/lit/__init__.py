"""Lightning glue: the classification module and normbench's callbacks."""

from normbench.lit.callbacks import EpochEvaluator, ThroughputMonitor
from normbench.lit.module import Classifier

__all__ = ["Classifier", "EpochEvaluator", "ThroughputMonitor"]
