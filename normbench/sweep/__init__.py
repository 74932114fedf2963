"""Optuna sweeps declared in configs/sweep/<name>.yaml: storage, workers, resume.

Public API:
    run_sweep(args) -> exit code         what `python -m normbench run sweep=NAME [overrides]` calls
    load_spec(name, overrides) -> SweepSpec
    make_plan(spec, run_overrides) -> Plan   every trial's config composed and checked up front
    final_trials(trials)                 the trials that stand for their point (re-queued ones left out)
    write_trials_csv(path, trials)

See normbench/sweep/study.py for the user attributes every trial carries.
"""

from normbench.results import default_storage_url, storage_url, sweep_dir
from normbench.sweep.export import write_trials_csv
from normbench.sweep.plan import Plan, config_id, make_plan, point_key
from normbench.sweep.runner import run_sweep
from normbench.sweep.spec import SweepSpec, load_spec
from normbench.sweep.study import final_trials, superseded_numbers

__all__ = ["Plan", "SweepSpec", "config_id", "default_storage_url", "final_trials", "load_spec", "make_plan",
           "point_key", "run_sweep", "storage_url", "superseded_numbers", "sweep_dir", "write_trials_csv"]
