"""Checkpoints: `<out_dir>/last.ckpt` after every epoch, and resuming a run to the numbers of an uninterrupted one.

Lightning's checkpoint holds the model, the optimizer, the LR scheduler and the loop counters. What a
normbench run keeps besides goes in too, each piece by its owner:
    the training batches' random state      LoaderState (the train loader's BatchLoader.state_dict)
    the per-epoch history, divergence       EpochEvaluator.state_dict
    examples seen and training seconds      ThroughputMonitor.state_dict
    calibration.json's epochs, calib_s      CalibrationMonitor.state_dict
    the first batch's loss (divergence)     Classifier.on_save_checkpoint
    torch's global random state             RandomState (below)
The checkpoint is written at the end of an epoch after the epoch's evaluation and measurements (Lightning
runs checkpoint callbacks last), so a resumed run starts with the next epoch and appends to the same
history, calibration.json and metrics.csv (when it resumes in the same out_dir).

A checkpoint resumes a run only with the config it was made with: `resume_problem` names the settings
that differ, except those that do not change the numbers (`normbench.overrides.NEUTRAL_KEYS`) and
`trainer.max_epochs` / `trainer.max_steps` (training longer is what resuming is for), except with a decaying
`optim.scheduler` (cosine, linear), which decays to 0 over the planned run: its length is then part of the numbers.
The schedule is a closed form of the optimizer step (`normbench.training.schedule`), and the step count, the
optimizer's rate and torch's LambdaLR position are in Lightning's checkpoint, so a resumed scheduled run trains at
the rates of the uninterrupted one (tests/test_schedules.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from normbench.errors import ConfigError
from normbench.models.norm_act import with_legacy_norm_act
from normbench.overrides import NEUTRAL_KEYS, differences, under
from normbench.training.schedule import DECAYING

LAST = "last.ckpt"
# Training longer (or shorter) than the checkpointed run planned is allowed unless the schedule decays over it.
RUN_LENGTH = ("trainer.max_epochs", "trainer.max_steps")


def checkpoint_callback(out_dir: Path) -> L.Callback:
    """Lightning's ModelCheckpoint writing (and overwriting) `<out_dir>/last.ckpt` after every epoch."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    # The one kept checkpoint (no monitor: the latest) named `last`; Lightning's save_last alone would only
    # write it beside a top-k checkpoint.
    return ModelCheckpoint(dirpath=str(out_dir), filename=LAST.removesuffix(".ckpt"), monitor=None, save_top_k=1,
                           every_n_epochs=1, save_on_train_epoch_end=True, enable_version_counter=False)


def resolve_ckpt_path(ckpt_path: str | None, out_dir: Path) -> Path | None:
    """The checkpoint file `trainer.ckpt_path` names (`last`: `<out_dir>/last.ckpt`), checked to exist."""
    if ckpt_path is None:
        return None
    path = out_dir / LAST if ckpt_path == "last" else Path(ckpt_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"trainer.ckpt_path={ckpt_path}: no checkpoint file {path}; accepted: a file written "
                          f"by a run (<out_dir>/{LAST}), last (with out_dir=DIR) or null")
    return path


def read_checkpoint_epochs(path: Path) -> tuple[dict[str, Any], int | None, int | None]:
    """(the run config, the optimizer step, the epochs trained) stored in a normbench checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: one line
        raise ConfigError(f"trainer.ckpt_path={path} cannot be read as a checkpoint "
                          f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    config = (ckpt.get("hyper_parameters") or {}).get("config") if isinstance(ckpt, dict) else None
    if not isinstance(config, dict):
        raise ConfigError(f"trainer.ckpt_path={path} is not a normbench run checkpoint (it holds no run config)")
    step, epoch = ckpt.get("global_step"), ckpt.get("epoch")
    # written at an epoch's end, before Lightning counts the epoch as done: `epoch` is its 0-based index
    return config, int(step) if isinstance(step, int) else None, epoch + 1 if isinstance(epoch, int) else None


def nothing_left(epochs_done: int | None, step: int | None, max_epochs: int, max_steps: int | None) -> bool:
    """True when a checkpoint already reached the run's end (Lightning would train nor measure anything)."""
    if max_steps is not None and step is not None and step >= max_steps:
        return True
    return epochs_done is not None and epochs_done >= max_epochs


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) of every setting that differs and changes the numbers."""
    free: tuple[str, ...] = NEUTRAL_KEYS
    if not decaying(current):  # a warm-up alone does not depend on the run's length
        free = (*free, *RUN_LENGTH)
    return [d for d in differences(with_legacy_norm_act(saved), current) if not under(d[0], free)]


def resume_problem(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why the checkpoint at `path`, made with config `saved`, cannot resume a run with config `current`."""
    diffs = config_differences(saved, current)
    if not diffs:
        return None
    shown = ", ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in diffs[:4])
    more = f" and {len(diffs) - 4} more" if len(diffs) > 4 else ""
    why = ""
    if decaying(current) and any(under(k, RUN_LENGTH) for k, _, _ in diffs):
        why = (f"; optim.scheduler={current['optim']['scheduler']} decays to 0 over the planned run, so its length "
               "is fixed")
    return f"the checkpoint {path} was made with other settings ({shown}{more}){why}"


def decaying(config: dict[str, Any]) -> bool:
    """Whether the run config's learning rate decays over the run's planned length."""
    return ((config.get("optim") or {}).get("scheduler") or "none") in DECAYING


class LoaderState(L.Callback):
    """Saves and restores the training loader's random state with the checkpoint.

    Lightning saves a stateful train loader too, but restores it only when resuming inside an epoch; normbench
    checkpoints at epoch ends, where the next epoch's order must still follow from the saved state.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.loader.load_state_dict(state_dict)


class RandomState(L.Callback):
    """Saves and restores torch's global random state with the checkpoint (dropout and the like draw from it)."""

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["cpu"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
