"""Studies: paper-style questions declared in experiments/<study>.yaml, their committed results in results/<study>/.

A study names the sweeps it runs (its *parts*), the tables and figures it reports, and its claims: hypotheses
with a pre-declared, machine-checkable test, written before the runs. `python -m normbench reproduce STUDY`
runs the parts (resumable, Optuna underneath), exports every trial's record to results/<study>/records/, and
regenerates the tables, figures, claim verdicts, provenance and README from those records only;
`reproduce STUDY --check` regenerates them without training and confirms the committed files are unchanged.

Public API:
    load_experiment(name, scale) -> Experiment
    available() -> list of study names
"""

from normbench.experiments.spec import Experiment, available, experiments_dir, load_experiment

__all__ = ["Experiment", "available", "experiments_dir", "load_experiment"]
