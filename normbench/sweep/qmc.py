"""`sampler: qmc`: scrambled Sobol points, lead k of a search taking the sequence's point k.

Optuna's QMCSampler numbers its points with a counter in the study that every `ask()` advances (the
repeated seeds of a kept configuration too) and samples the study's very first trial at random. Here the
point is the lead's index and the search space is the sweep's own: lead k is point k of the scrambled
Sobol sequence of `sampler_seed` whatever the number of workers or seeds, so a search is reproducible and
its first configurations cover the space evenly (Bergstra & Bengio 2012; the Deep Learning Tuning
Playbook's quasi-random search).
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna


class LeadQMCSampler(optuna.samplers.QMCSampler):
    """Optuna's QMCSampler (scrambled Sobol) pinned to one point of the sequence.

    Args:
        space: the searched distributions {config key: Optuna distribution}.
        index: which point of the sequence (the lead's index, 0-based).
        seed: the scrambling seed (sampler_seed).
    """

    def __init__(self, space: dict[str, Any], index: int, seed: int, **options: Any) -> None:
        options.setdefault("qmc_type", "sobol")
        options.setdefault("scramble", True)
        options.setdefault("warn_independent_sampling", False)
        with warnings.catch_warnings():  # Optuna marks QMCSampler experimental; its use here is deliberate
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            super().__init__(seed=seed, **options)
        self._space = dict(space)
        self._index = index

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return dict(self._space)

    def _find_sample_id(self, study: Any, search_space: dict[str, Any]) -> int:  # overrides Optuna's counter
        return self._index

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        with warnings.catch_warnings():  # scipy: Sobol balance needs 2^m points; one point at a time is intended
            warnings.filterwarnings("ignore", message=".*balance properties of Sobol.*")
            return super().sample_relative(study, trial, search_space)
