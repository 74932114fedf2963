"""Example normbench plugin: a centred-only batch norm, plus a tiny model and dataset (see README.md)."""

from centred_bn.layers import CentredBatchNorm

__all__ = ["CentredBatchNorm"]
