"""metrics.csv (`logger=csv`): Lightning's CSVLogger, continued rather than restarted by a resumed run.

Lightning's CSV writer deletes an existing metrics.csv when it starts. A run resumed from a checkpoint keeps
the rows of the steps before the checkpoint (rows logged after it, by the interrupted run, are dropped: the
resumed run logs those epochs again) and appends its own, under one header.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import cast

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

METRICS_FILE = ExperimentWriter.NAME_METRICS_FILE


def make_csv_logger(out_dir: Path, resumed_step: int | None = None) -> CSVLogger:
    """The run's CSV logger; with `resumed_step`, metrics.csv keeps its rows of earlier steps."""
    if resumed_step is not None:
        keep_rows_before(out_dir / METRICS_FILE, resumed_step)
    cls = _ContinuedCSVLogger if resumed_step is not None else CSVLogger
    # written at every log call (once per epoch), so a crashed run's metrics.csv holds the epochs its
    # checkpoint holds
    return cls(save_dir=str(out_dir), name="", version="", flush_logs_every_n_steps=1)


def keep_rows_before(path: Path, step: int) -> None:
    """Drops the rows of `path` logged at `step` or later."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames or [], list(reader)
    kept = [r for r in rows if r.get("step") and float(r["step"]) < step]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(kept)


class _ContinuedWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        path = Path(self.metrics_file_path)
        if path.is_file():  # continue under the existing header (new keys rewrite it, as Lightning does)
            with open(path, newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv
        pass


class _ContinuedCSVLogger(CSVLogger):
    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _ContinuedWriter(log_dir=self.log_dir)
        return cast(ExperimentWriter, self._experiment)  # the writer made above
