"""A study's tables, figures and dashboard page as a W&B artifact, so a W&B user finds the paper table in the project.

`python -m normbench dashboard sweep=NAME` writes the study's table.md/.tex, figures and dashboard page from the
stored study (never re-training) and logs them as the artifact `<study>-results` (type `results`) of one run of
job type `report` in the study's W&B group (`wandb_group`, a study attribute the sweep stores) tagged with the
study's name. Without a W&B key (or with WANDB_MODE=offline) that run is written offline under
`<results_dir>/<study>/wandb/offline-run-*` and uploaded later with `wandb sync`; nothing is sent anywhere.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from normbench.report.study import ReportArgs

ARTIFACT_TYPE = "results"
JOB_TYPE = "report"


def artifact_name(study: str) -> str:
    return f"{study}-results"


def study_group(ref: ReportArgs) -> str:
    """The W&B group of the study's runs (the sweep stores it; a study from before: its name)."""
    from normbench.report.study import load_study

    group = load_study(ref).user_attrs.get("wandb_group")
    return group if isinstance(group, str) and group else ref.sweep


def log_results_artifact(ref: ReportArgs, files: list[Path], offline: bool) -> Path | None:
    """Logs `files` (under `ref.out_dir`) as the study's artifact; returns the offline run's folder (None online)."""
    import wandb

    opts: dict[str, Any] = ref.options
    files = sorted({Path(f) for f in files if Path(f).is_file()})
    artifact = wandb.Artifact(artifact_name(ref.sweep), type=ARTIFACT_TYPE,
                              description=f"normbench study {ref.sweep}: tables, figures and dashboard page",
                              metadata={"study": ref.sweep, "files": [str(f.relative_to(ref.out_dir)) for f in files]})
    for f in files:
        artifact.add_file(str(f), name=str(f.relative_to(ref.out_dir)))
    ref.out_dir.mkdir(parents=True, exist_ok=True)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):  # wandb's banner lines would drown the command's own output
        run = wandb.init(project=str(opts["project"]), entity=opts.get("entity"), group=study_group(ref),
                         job_type=JOB_TYPE, name=f"{ref.sweep}-report", tags=[ref.sweep], dir=str(ref.out_dir),
                         mode="offline" if offline else "online", settings=wandb.Settings(silent=True),
                         config={"study": ref.sweep, "results_dir": str(ref.results_dir)})
        run.log_artifact(artifact)
        sync_dir = Path(run.settings.sync_dir) if offline else None
        run.finish()
    return sync_dir
