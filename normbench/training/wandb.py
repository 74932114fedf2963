"""Weights & Biases logging of one run: the Lightning logger `logger=wandb` builds, and the end-of-run hook.

A run is logged with its whole resolved config (top-level keys `norm`, `data`, ... so W&B can group by
`norm.name`), per-epoch metrics (from normbench's EpochEvaluator through Lightning), the final summary
record and, when the measurements callback wrote `<out_dir>/calibration.json`, its per-layer errors as a
wandb.Table. Project `logger.project` (default normbench), group `logger.group` (a sweep sets its study's
`<study>-<id>`), job type `logger.job_type` (train; a sweep's trials: sweep-trial), tags model, norm and
dataset (a sweep adds its study's name). Without an API key (environment or netrc) and without WANDB_MODE,
the run is offline (wandb 0.31 would otherwise raise a UsageError) and is written in the run's own folder,
`<out_dir>/wandb/offline-run-*` (one stderr line says where and how to upload it: `wandb sync <that dir>`;
a sweep's trials say nothing, the sweep says it once). wandb's own console lines are silenced offline and
for a sweep's trials.

A run is never lost to its logger: when W&B should go online but its host does not answer (checked with
one TCP connection, 5 s at most) or `wandb.init` fails, the run logs offline instead, with one warning
line on stderr.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from normbench.wandb_env import has_api_key

CALIBRATION_FILE = "calibration.json"
CALIBRATION_COLUMNS = ["epoch", "layer", "channels", "mean_rel_err", "var_log_ratio", "kl"]
# Summary fields logged elsewhere: the config (the run config) and the per-epoch history (the run history).
_NOT_SCALAR = ("history", "config")


class NormbenchWandbLogger(WandbLogger):
    """WandbLogger whose hyperparameters are the run config itself, not wrapped in a `config` key.

    The Classifier saves `{"config": resolved}` as its hparams; logging that as is would nest every key
    under `config.` and duplicate what `wandb.init(config=...)` already holds.
    """

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        if isinstance(params, dict) and set(params) == {"config"} and isinstance(params["config"], dict):
            params = params["config"]
        super().log_hyperparams(params)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Lightning always passes wandb.init(anonymous=None), which wandb >= 0.19 answers with a deprecation
        # warning on every run; normbench never logs anonymously.
        self._wandb_init.pop("anonymous", None)


PROBE_TIMEOUT_S = 5.0
SWEEP_TRIAL = "sweep-trial"  # the job type of a sweep's trials (logger.job_type); their runs log quietly


@functools.cache
def unreachable(base_url: str) -> str | None:
    """Why the W&B host of `base_url` cannot be reached (one TCP connection, once per process), else None."""
    parsed = urlparse(base_url)
    host = parsed.hostname or "api.wandb.ai"
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as e:
        return f"{host}:{port}: {e.strerror or type(e).__name__}"


@functools.cache
def warn_once(text: str) -> None:
    """Prints one warning line on stderr, once per process (a sweep's trials would repeat it)."""
    print(f"warning: {text}", file=sys.stderr, flush=True)


def make_wandb_logger(cfg: DictConfig, config: dict[str, Any], out_dir: Path) -> NormbenchWandbLogger:
    """The Lightning logger for `logger=wandb`: offline without a key and WANDB_MODE, or when W&B cannot be
    reached (then with one warning line); online otherwise, with its run created now so that a failure to
    start it falls back to offline instead of losing the run."""
    mode = os.environ.get("WANDB_MODE", "")
    offline = (not has_api_key() and not mode) or mode in ("offline", "dryrun")
    save_dir = Path(out_dir)  # wandb writes <out_dir>/wandb/offline-run-*: the run's files stay together
    save_dir.mkdir(parents=True, exist_ok=True)
    group = str(cfg.logger.group) if cfg.logger.get("group") else None  # a sweep's trials: the study's group
    job_type = str(cfg.logger.get("job_type") or "train")
    tags = list(dict.fromkeys([cfg.model.name, cfg.norm.name, cfg.data.name, *cfg.logger.tags]))
    fallback = (f"logging this run offline under {save_dir / 'wandb'}; upload it later with "
                f"`wandb sync {save_dir / 'wandb'}/offline-run-*`")

    def build(offline: bool) -> NormbenchWandbLogger:
        quiet = offline or job_type == SWEEP_TRIAL
        return NormbenchWandbLogger(
            project=cfg.logger.project, entity=cfg.logger.entity, group=group, tags=tags, job_type=job_type,
            name=f"{group}-{out_dir.name}" if group else out_dir.name, save_dir=str(save_dir), offline=offline,
            config=config, settings={"silent": True} if quiet else None,
            # explicit: after a failed online start, wandb no longer reads WANDB_MODE (Lightning's offline switch)
            mode="offline" if offline else None,
        )

    if offline or mode == "disabled":
        return build(offline)
    reason = unreachable(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    if reason is not None:
        warn_once(f"W&B is unreachable ({reason}); {fallback}")
        return build(True)
    logger = build(False)
    try:
        logger.experiment  # noqa: B018 - starts the online run now, where a failure can still be handled
    except Exception as e:  # noqa: BLE001 - wandb raises CommError, UsageError, timeouts...
        text = " ".join(str(e).split())[:200] or type(e).__name__
        warn_once(f"W&B online run did not start ({type(e).__name__}: {text}); {fallback}")
        return build(True)
    return logger


def flat_summary(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The summary's scalar fields as W&B run-summary entries; nested mappings (`versions`) become dotted keys.

    The config (logged as the run config) and lists such as the per-epoch history are left out.
    """
    out: dict[str, Any] = {}
    for k, v in summary.items():
        if not prefix and k in _NOT_SCALAR:
            continue
        if isinstance(v, dict):
            out.update(flat_summary(v, f"{prefix}{k}."))
        elif v is None or isinstance(v, (int, float, str, bool)):
            out[f"{prefix}{k}"] = v
    return out


def calibration_rows(out_dir: Path) -> list[list[Any]] | None:
    """Rows of `<out_dir>/calibration.json` (one per epoch and layer), None when the file is absent."""
    path = Path(out_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    with open(path) as f:
        data = json.load(f)
    rows = []
    for epoch in data.get("epochs", []):
        for layer in epoch.get("layers", []):
            rows.append([epoch.get("epoch"), *(layer.get(c) for c in CALIBRATION_COLUMNS[1:])])
    return rows


def log_run_end(logger: WandbLogger, summary: dict[str, Any], out_dir: Path) -> None:
    """End-of-run hook: the final summary and the calibration table go to the W&B run, then it is finished.

    Finishing matters when several runs share a process (sweeps, tests): the next `wandb.init` starts a
    new run instead of appending to this one.
    """
    import wandb

    run = logger.experiment
    run.summary.update(flat_summary(summary))
    try:
        rows = calibration_rows(out_dir)
    except (OSError, ValueError, AttributeError) as e:  # a malformed file must not lose the run's other records
        warnings.warn(f"calibration table not logged to W&B: cannot read {out_dir / CALIBRATION_FILE}: {e}",
                      stacklevel=2)
        rows = None
    if rows:
        run.log({"calibration/layers": wandb.Table(columns=list(CALIBRATION_COLUMNS), data=rows)})  # a list[str | int]
    offline_dir = Path(run.settings.sync_dir) if run.settings.mode in ("offline", "dryrun") else None
    quiet = run.job_type == SWEEP_TRIAL
    run.finish(exit_code=0)  # a diverged run is a result, not a crash: its status is in the summary
    if offline_dir is not None and not quiet:
        print(f"W&B: offline run in {offline_dir}; upload it with `wandb sync {offline_dir}`", file=sys.stderr,
              flush=True)


def close_failed(logger: Any) -> None:
    """Marks the W&B run failed after an exception in training (no-op for other loggers)."""
    if isinstance(logger, WandbLogger) and logger._experiment is not None:
        logger._experiment.finish(exit_code=1)
