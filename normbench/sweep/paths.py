"""Where a sweep's results live. Shared by the sweep runner and the report commands.

Layout under `<results_dir>/<sweep>/`: `study.db` (the default embedded SQLite storage),
`trials/<number>/` (each trial's run directory with its summary.json), `trials.csv`, and the reports
(table.md, table.tex, figures).
"""

from __future__ import annotations

from pathlib import Path


def sweep_dir(results_dir: str | Path, sweep: str) -> Path:
    return Path(results_dir) / sweep


def default_storage_url(results_dir: str | Path, sweep: str) -> str:
    """The embedded default: an SQLite file `<results_dir>/<sweep>/study.db` (absolute path)."""
    return f"sqlite:///{(sweep_dir(results_dir, sweep) / 'study.db').resolve()}"


def storage_url(results_dir: str | Path, sweep: str, storage: str | None = None) -> str:
    """`storage` (any Optuna RDB URL, e.g. postgresql://...) if given, else the default SQLite file."""
    return storage or default_storage_url(results_dir, sweep)
