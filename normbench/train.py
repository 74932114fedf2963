"""train(cfg) -> RunResult: one training run, end to end, writing <out_dir>/summary.json."""

from __future__ import annotations

import gc
import logging
import os
import time
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, cast

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from normbench.config import DataSchema, from_mapping, logger_names, options_of, resolve_accelerator, to_dict
from normbench.data import InMemoryData, load_data
from normbench.environment import git_info, machine, versions
from normbench.errors import ConfigError
from normbench.files import check_output_dir, write_json_atomic
from normbench.models import build_model
from normbench.norms import NORMS, norm_factory
from normbench.norms.naming import norm_layers
from normbench.norms.per_device import per_device
from normbench.numerics import fingerprint as numerics_fingerprint
from normbench.run_facts import (
    effective_batch_size,
    norm_batch_size,
    per_device_norms,
    running_stats_fields,
    step_batch_size,
    use_torch_sync_batchnorm,
)
from normbench.training import Classifier, EpochEvaluator, ThroughputMonitor
from normbench.training.accumulation import accumulation_callbacks
from normbench.training.checkpoint import (
    LAST,
    LoaderState,
    RandomState,
    checkpoint_callback,
    nothing_left,
    read_checkpoint_epochs,
    resolve_ckpt_path,
    resume_problem,
)
from normbench.training.chunks import StepChunks, chunk_steps
from normbench.training.fast_path import precision_parts, prepare, resolve_fast_path
from normbench.training.history import EpochHistory, RecordPart
from normbench.training.measurements import failure_reason, measurement_callbacks
from normbench.training.module import norm_decay
from normbench.training.progress import EpochLines, use_epoch_lines

SUMMARY_FILE = "summary.json"


@dataclass
class RunResult:
    """What a run produced: the summary record (also in <out_dir>/summary.json) and the trained module."""

    summary: dict[str, Any]
    out_dir: Path
    module: Classifier
    is_global_zero: bool = True  # False in the extra rank processes of a DDP run (which write nothing)


def quiet_lightning() -> None:
    """Lightning's banners (GPU available..., model summaries) are noise in a benchmark's output."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.seed", "lightning.pytorch.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    # Every DDP rank evaluates the whole (unsharded) eval splits, so epoch-level logs agree without a sync.
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    # A resumed run appends to its own metrics.csv; a checkpoint folder that is the run folder is not empty.
    warnings.filterwarnings("ignore", message=".*Experiment logs directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    # a re-queued sweep trial resumes from its predecessor's folder and writes its own: expected
    warnings.filterwarnings("ignore", message=".*The dirpath has changed from.*")


def default_out_dir(cfg: DictConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    # a plugin's import path (pkg.mod:Name) names a folder without its ':' (not a path character everywhere)
    names = "-".join(str(n).replace(":", ".") for n in (cfg.model.name, cfg.norm.name, cfg.data.name))
    return Path("runs") / f"{stamp}-{names}-s{cfg.seed}"


# --- data-parallel runs (trainer.devices > 1) ---------------------------------------------------------
# Lightning's DDP launcher re-runs this process's command once per extra rank; those processes inherit
# rank 0's environment, through which they learn rank 0's (timestamped) default out_dir.
RUN_DIR_ENV = "NORMBENCH_DDP_RUN_DIR"


def run_out_dir(cfg: DictConfig) -> Path:
    """`cfg.out_dir`, else a new default one; a rank > 0 of a DDP run takes rank 0's."""
    if cfg.out_dir:
        return Path(cfg.out_dir)
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and os.environ.get("LOCAL_RANK", "0") != "0":
        return Path(inherited)
    return default_out_dir(cfg)


@contextmanager
def shared_run_dir(out_dir: Path, devices: int) -> Iterator[None]:
    """Exposes `out_dir` to the rank processes launched during `trainer.fit`, and only then."""
    if devices == 1 or os.environ.get("LOCAL_RANK", "0") != "0":
        yield
        return
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(out_dir)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous
# ----------------------------------------------------------------------------------------------------------


def load_run_data(cfg: DictConfig, device: torch.device | str = "cpu") -> InMemoryData:
    d = cfg.data
    common = {f.name for f in fields(DataSchema)}  # the rest are the dataset loader's own options
    extra = {k: v for k, v in options_of(d).items() if k not in common}
    return load_data(d.name, d.root, train_subset=d.train_subset, test_subset=d.test_subset,
                     val_fraction=d.val_fraction, normalize=d.normalize, download=d.download,
                     device=device, **extra)


def build_run_model(cfg: DictConfig, data: InMemoryData) -> torch.nn.Module:
    """The model for `cfg` sized to `data`; a bad norm/model option becomes a one-line ConfigError."""
    try:
        factory = norm_factory(cfg.norm.name, **options_of(cfg.norm))
        if per_device_norms(cfg):
            factory = per_device(factory, cfg.trainer.emulate_devices, cfg.data.batch_size)
        return build_model(cfg.model.name, factory, data.num_classes, data.in_channels, data.image_size,
                           **options_of(cfg.model))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def norm_groups(cfg: DictConfig, net: torch.nn.Module) -> dict[str, int] | None:
    """Each norm layer's group count, for a norm with a `groups` option (null otherwise)."""
    if "groups" not in NORMS.get(cfg.norm.name).options:
        return None
    out = {}
    for site in getattr(net, "norm_sites", []):
        layer = net.get_submodule(site)
        groups = getattr(layer, "num_groups", getattr(layer, "groups", None))
        if isinstance(groups, int):
            out[site] = groups
    return out


def make_logger(cfg: DictConfig, out_dir: Path, resumed_step: int | None = None) -> list | bool:
    """The run's loggers (`logger=csv` or several: `logger=[csv,wandb]`); False for none. A run resumed from
    the checkpoint of `resumed_step` continues its metrics.csv."""
    loggers = [_one_logger(name, cfg, out_dir, resumed_step) for name in logger_names(cfg.logger)]
    return loggers or False


def _one_logger(name: str, cfg: DictConfig, out_dir: Path, resumed_step: int | None = None):
    if name == "csv":
        from normbench.training.csv_log import make_csv_logger

        return make_csv_logger(out_dir, resumed_step)
    if name == "tensorboard":
        from normbench.training.tensorboard import make_tensorboard_logger

        return make_tensorboard_logger(out_dir)
    if name == "wandb":
        from normbench.training.wandb import make_wandb_logger

        config = to_dict(cfg)
        config["out_dir"] = str(out_dir)
        return make_wandb_logger(cfg, config, out_dir)
    raise ConfigError(f"unknown logger '{name}'; accepted: none, csv, tensorboard, wandb")  # pragma: no cover


def train_batch_limit(trainer_cfg: DictConfig) -> int | float | None:
    """The training loader's `max_batches`: 1 for fast_dev_run, else trainer.limit_train_batches."""
    return 1 if trainer_cfg.fast_dev_run else trainer_cfg.limit_train_batches


def make_profiler(name: str | None, out_dir: Path):
    """Lightning's profiler for `trainer.profiler`, its report in `<out_dir>/fit-profile.txt` (not on stdout)."""
    if name is None:
        return None
    from lightning.pytorch.profilers import AdvancedProfiler, SimpleProfiler

    cls = SimpleProfiler if name == "simple" else AdvancedProfiler
    return cls(dirpath=str(out_dir), filename="profile")


_previous_trainer: weakref.ref | None = None  # the last run's Trainer in this process (collect_previous_run)


def collect_previous_run() -> None:
    """Collects the last run's trainer, module and callbacks when they are still in memory.

    They hold the dataset tensors in reference cycles, which only Python's cyclic collector frees. Left to it,
    they pile up (a sweep worker held ~10 trials' worth after 40), and the next run's training steps are
    slower: LeNet-BN at batch 2, runs alternating in one process, 2,350 ex/s after an uncollected run against
    2,530 after a collection. A full collection costs about 0.2 s with torch and Lightning loaded, so it is
    made only when the last run's Trainer is still alive (a sweep worker collects after each trial itself).
    """
    if _previous_trainer is not None and _previous_trainer() is not None:
        gc.collect()


def apply_fast_path(cfg: DictConfig, accelerator: str) -> tuple[DictConfig, str]:
    """`trainer.fast_path` resolved into trainer.precision / channels_last / compile (normbench.training.
    fast_path); the config the run records holds the settings that ran. Returns it and the record's reason."""
    settings, reason = resolve_fast_path(cfg.trainer.fast_path, cfg.model.name, cfg.norm.name, accelerator,
                                         cfg.trainer.fast_path_margin)
    if settings:
        cfg = cast(DictConfig, OmegaConf.merge(cfg, {"trainer": settings}))
    return cfg, reason


def train(cfg: DictConfig | dict, callbacks: list[L.Callback] | tuple = ()) -> RunResult:
    """Runs one training run for a validated config and writes its summary record.

    Args:
        cfg: a config from `normbench.config.load_config`, or a mapping, possibly partial, completed with the
            same YAML defaults as the command line (`normbench.config.from_mapping`).
        callbacks: extra Lightning callbacks; a `normbench.training.history.RecordPart` among them follows the
            per-epoch history and adds its `summary()` fields (declared in normbench.record) to the record.
    """
    if not isinstance(cfg, DictConfig):
        cfg = from_mapping(cfg)
    collect_previous_run()
    # CPU numbers depend on the intra-op thread count: it is set for the whole run (data standardization
    # included) and recorded as `threads`; the caller's setting is restored afterwards.
    threads = cfg.trainer.threads or torch.get_num_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(cfg, callbacks, threads)
    finally:
        torch.set_num_threads(previous)


def check_accumulation_window(cfg: DictConfig, data: InMemoryData, bs: int, composition: str,
                              composition_options: dict[str, Any]) -> None:
    """Refuses an accumulation window longer than an epoch: its one optimizer step (made at the epoch's end)
    would not be what the record's effective_batch_size claims. Checked on the loader the run will use."""
    window = cfg.trainer.accumulate_grad_batches
    if window == 1 or cfg.trainer.fast_dev_run:
        return
    batch_stats = bool(NORMS.get(cfg.norm.name).meta.get("batch_stats"))
    probe = data.loader("train", bs, shuffle=True, drop_last=cfg.data.drop_last, seed=cfg.seed,
                        min_batch=2 if batch_stats else 1, composition=composition,
                        composition_options=composition_options, max_batches=train_batch_limit(cfg.trainer))
    batches = len(probe) // max(1, cfg.trainer.devices)  # each data-parallel device iterates its share
    if window > batches:
        raise ConfigError(f"trainer.accumulate_grad_batches={window} is longer than an epoch ({batches} training "
                          f"batches of {bs} per device): no full window would ever step; accepted: 1 to {batches} "
                          "(or a smaller data.batch_size, or more training data)")


def _train(cfg: DictConfig, callbacks: list[L.Callback] | tuple, threads: int) -> RunResult:
    quiet_lightning()
    t_start = time.perf_counter()
    accelerator = resolve_accelerator(cfg.trainer.accelerator)
    device = torch.device("cuda") if accelerator == "gpu" and cfg.trainer.devices == 1 else torch.device("cpu")
    cfg, fast_path = apply_fast_path(cfg, accelerator)
    out_dir = run_out_dir(cfg)
    check_output_dir(out_dir, "out_dir")  # before loading data: a bad out_dir is a user error, not a late crash
    resolved = to_dict(cfg)
    resolved["out_dir"] = str(out_dir)
    ckpt_path = resolve_ckpt_path(cfg.trainer.ckpt_path, out_dir)
    resumed_step = None
    if ckpt_path is not None:
        saved, resumed_step, epochs_done = read_checkpoint_epochs(ckpt_path)
        problem = resume_problem(ckpt_path, saved, resolved)
        if problem is not None:
            raise ConfigError(f"trainer.ckpt_path: {problem}; resume with the same settings (trainer.max_epochs "
                              "may change unless the rate decays) or start a new run")
        if nothing_left(epochs_done, resumed_step, cfg.trainer.max_epochs, cfg.trainer.max_steps):
            raise ConfigError(f"trainer.ckpt_path={cfg.trainer.ckpt_path}: the checkpoint has trained {epochs_done} "
                              f"epoch(s), {resumed_step} steps, already the end of this run; raise "
                              "trainer.max_epochs (or trainer.max_steps) to train on")
    fast = cfg.trainer.fast_dev_run

    L.seed_everything(cfg.seed, workers=False, verbose=False)
    data = load_run_data(cfg, device)
    net = prepare(build_run_model(cfg, data), cfg.trainer.precision, cfg.trainer.channels_last)
    bs = step_batch_size(cfg)
    if len(data.train_x) < bs * cfg.trainer.devices and cfg.data.drop_last:
        w = cfg.trainer.emulate_devices
        emulated = f" x trainer.emulate_devices={w}" if w > 1 else ""
        raise ConfigError(f"data.batch_size={cfg.data.batch_size}{emulated} is larger than the {len(data.train_x)} "
                          "training samples "
                          "(set a smaller batch size, a larger data.train_subset, or data.drop_last=false)")
    if len(data.train_x) < 2 * cfg.trainer.devices:
        raise ConfigError(f"only {len(data.train_x)} training samples: need at least 2 per device")
    composition = cfg.data.batch_composition
    composition_options = ({"classes_per_batch": cfg.data.classes_per_batch}
                           if cfg.data.classes_per_batch is not None else {})
    if cfg.data.classes_per_batch is not None and cfg.data.classes_per_batch > data.num_classes:
        raise ConfigError(f"data.classes_per_batch={cfg.data.classes_per_batch} exceeds the "
                          f"{data.num_classes} classes of {cfg.data.name}; accepted: 1-{data.num_classes}")

    check_accumulation_window(cfg, data, bs, composition, composition_options)

    out_dir.mkdir(parents=True, exist_ok=True)

    module = Classifier(net, to_dict(cfg.optim), hparams={"config": resolved},
                        accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
                        gradient_clip_val=cfg.trainer.gradient_clip_val,
                        compile_mode=cfg.trainer.compile_mode if cfg.trainer.compile else None,
                        channels_last=cfg.trainer.channels_last)
    throughput = ThroughputMonitor(compiled=cfg.trainer.compile)
    # The record's parts: the evaluator opens each epoch's history entry and publishes it; the measurements
    # and the caller's parts (e.g. a sweep's pruner) follow it through `epoch_evaluated`.
    # Progress: Lightning's bar on a terminal, else one line per epoch (after the epoch's measurements).
    epoch_lines = cfg.trainer.progress_bar and use_epoch_lines()
    # fast_dev_run: one eval batch per split, no measurements after epochs (a smoke test of the code path)
    parts: list[RecordPart] = [throughput, EpochEvaluator(data, cfg.data.eval_batch_size, 1 if fast else None),
                               *(measurement_callbacks(cfg, data, out_dir) if not fast else []),
                               *(cb for cb in callbacks if isinstance(cb, RecordPart)),
                               *([EpochLines(cfg.trainer.max_epochs)] if epoch_lines else [])]
    history = EpochHistory()
    for part in parts:
        part.attach(history)
    trained = TrainingFinished()  # first: its on_train_end runs before any measurement's
    # Epoch-end hooks in list order: the throughput clock stops, then accumulation windows are committed,
    # then the evaluator measures (and the other parts follow its published entry).
    all_callbacks: list[L.Callback] = [trained, throughput, *accumulation_callbacks(net), *parts[1:],
                                       *(cb for cb in callbacks if not isinstance(cb, RecordPart)), RandomState()]
    checkpointing = cfg.trainer.checkpoint and not fast
    if checkpointing:  # Lightning runs checkpoint callbacks last: after the epoch's evaluation and measurements
        all_callbacks.append(checkpoint_callback(out_dir))
    from lightning.pytorch.callbacks import Checkpoint

    checkpointing = checkpointing or any(isinstance(cb, Checkpoint) for cb in callbacks)
    batch_stats = bool(NORMS.get(cfg.norm.name).meta.get("batch_stats"))
    # distributed: each DDP rank iterates its own share (resolved once Lightning has made the process group)
    train_loader = data.loader("train", bs, shuffle=True, drop_last=cfg.data.drop_last, seed=cfg.seed,
                               min_batch=2 if batch_stats else 1, augment=cfg.data.augment, distributed=True,
                               composition=composition, composition_options=composition_options,
                               max_batches=train_batch_limit(cfg.trainer))
    all_callbacks.append(LoaderState(train_loader))
    steps_per_chunk = chunk_steps(cfg.trainer.chunk_steps, cfg.trainer.devices, bs)
    chunks = StepChunks(train_loader, steps_per_chunk)
    if cfg.trainer.progress_bar and not epoch_lines:
        from lightning.pytorch.callbacks import TQDMProgressBar

        all_callbacks.append(TQDMProgressBar(refresh_rate=max(1, len(chunks) // 20)))

    logger = make_logger(cfg, out_dir, resumed_step) if not fast else False
    deterministic: bool | Literal["warn"] = cfg.trainer.deterministic
    if accelerator != "cpu" and deterministic is True:
        deterministic = "warn"
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=cfg.trainer.devices,
        strategy=cfg.trainer.strategy,
        precision=cfg.trainer.precision,
        max_epochs=1 if fast else cfg.trainer.max_epochs,
        max_steps=cfg.trainer.max_steps or -1,
        # CUDA lacks deterministic kernels for some ops (adaptive pooling backward): warn there instead.
        deterministic=deterministic,
        logger=logger,
        callbacks=all_callbacks,
        enable_checkpointing=checkpointing,
        profiler=make_profiler(cfg.trainer.profiler, out_dir),
        enable_model_summary=False,
        enable_progress_bar=cfg.trainer.progress_bar and not epoch_lines,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=max(1, min(50, len(train_loader))),
        default_root_dir=str(out_dir),
        # sync_bn on GPUs: torch's nn.SyncBatchNorm (it raises on CPU, where normbench's own layer runs)
        sync_batchnorm=use_torch_sync_batchnorm(cfg.norm.name, accelerator, cfg.trainer.devices),
    )
    global _previous_trainer
    _previous_trainer = weakref.ref(trainer)
    errors: dict[str, str] = {}
    logger_closed = False
    try:
        with shared_run_dir(out_dir, cfg.trainer.devices):
            trainer.fit(module, train_dataloaders=chunks, ckpt_path=ckpt_path and str(ckpt_path))
    except Exception as e:
        close_logger(logger, failed=True)
        if not trained.done:
            raise
        # Training finished; an end-of-training hook failed. The trained run is recorded, with the failure.
        errors["on_train_end"] = failure_reason(e)
        logger_closed = True
    except BaseException:
        close_logger(logger, failed=True)
        raise

    summary: dict[str, Any] = {"status": "ok", "measurement_errors": {}}
    for part in parts:
        try:
            summary.update(part.summary())
        except Exception as e:  # noqa: BLE001 - one part's figures must not lose the run
            errors[f"{type(part).__name__}.summary"] = failure_reason(e)
    summary["measurement_errors"] = {**summary["measurement_errors"], **errors}
    if summary.get("diverged_at_epoch") is not None:
        summary["status"] = "diverged"
    k, devices = cfg.trainer.accumulate_grad_batches, cfg.trainer.devices
    summary.update({
        "epochs": trainer.current_epoch,
        "optimizer_steps": trainer.global_step,
        "wall_s": time.perf_counter() - t_start,
        "seed": cfg.seed,
        "model": cfg.model.name,
        "norm": cfg.norm.name,
        "dataset": cfg.data.name,
        "batch_size": cfg.data.batch_size,
        "batch_composition": composition,
        "classes_per_batch": cfg.data.classes_per_batch,
        "train_left_out": train_loader.left_out,  # training samples no batch of an epoch holds
        "chunk_steps": steps_per_chunk,
        "train_batches": len(train_loader),  # per epoch (per device), after limit_train_batches / fast_dev_run
        "max_steps": cfg.trainer.max_steps,
        "fast_dev_run": fast,
        "deterministic": str(cfg.trainer.deterministic).lower(),  # true, false or warn
        "numerics": numerics_fingerprint(cfg.trainer.deterministic),  # code path + kernels behind the numbers
        "checkpoint": str(out_dir / LAST) if cfg.trainer.checkpoint and not fast else None,
        "resumed_from": None if ckpt_path is None else str(ckpt_path),
        "resumed_from_step": resumed_step,
        "lr": cfg.optim.lr,  # the rate the optimizer used (after a sweep's lr_scaling)
        **module.schedule_fields(),
        "norm_weight_decay": norm_decay(cfg.optim.weight_decay, cfg.optim.norm_weight_decay),
        "threads": threads,
        "emulate_devices": cfg.trainer.emulate_devices,
        "norm_batch_size": norm_batch_size(cfg),
        **running_stats_fields(cfg, net, samples_seen=throughput.examples),
        "norm_groups": norm_groups(cfg, net),
        "norm_layers": norm_layers(net, getattr(net, "norm_sites", []), getattr(net, "norm_site_kinds", {})),
        "accumulate_grad_batches": k,
        "devices": devices,
        "effective_batch_size": effective_batch_size(cfg),
        "n_train": len(data.train_x),
        "n_test": len(data.test_x),
        "n_params": sum(p.numel() for p in net.parameters()),
        "accelerator": accelerator,
        "device_name": torch.cuda.get_device_name(0) if accelerator == "gpu" else "cpu",
        "precision": cfg.trainer.precision,
        "precision_parts": precision_parts(cfg.trainer.precision),
        "channels_last": cfg.trainer.channels_last,
        "fast_path": fast_path,
        "data_source": data.source,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "out_dir": str(out_dir),
        **git_info(),
        "versions": versions(),
        "machine": machine(),
        "config": resolved,
    })
    if trainer.is_global_zero:
        write_json_atomic(out_dir / SUMMARY_FILE, summary)
        if not logger_closed:
            close_logger(logger, summary=summary, out_dir=out_dir)
    return RunResult(summary, out_dir, module, trainer.is_global_zero)


class TrainingFinished(L.Callback):
    """Marks that the training loop ended (its on_train_end runs first), so a later failure keeps the run."""

    def __init__(self) -> None:
        self.done = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.done = True


def close_logger(logger, summary: dict[str, Any] | None = None, out_dir: Path | None = None,
                 failed: bool = False) -> None:
    """End-of-run hook: W&B gets the final summary and the calibration table, then its run is finished."""
    from lightning.pytorch.loggers import WandbLogger

    for one in logger if isinstance(logger, list) else [logger]:
        if not isinstance(one, WandbLogger):
            continue
        from normbench.training.wandb import close_failed, log_run_end

        if failed:
            close_failed(one)
        else:
            log_run_end(one, summary or {}, out_dir or Path("."))
