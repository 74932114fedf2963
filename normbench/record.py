"""The run record (`<out_dir>/summary.json`): one typed definition of every field a run writes.

Each field has a name, a JSON type, a unit, a meaning, and a place: the top level of the record (`run`),
every per-epoch entry of `history` (`per_epoch`), or both (the top-level value is then the last epoch's).
The writers (train() and its callbacks), the sweep (the per-epoch objectives a pruner can follow, the
headline metrics stored as numeric trial attributes), the reports and the W&B logger take their field names
from here, and the README's record table is generated from it (`python -m normbench.record` prints it).
A record written by older code may lack fields added since (e.g. `norm_weight_decay`): readers treat a missing
field as null, and `problems` does not count it.

Plain Python (no torch): the report commands read it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Units of the fields (how a number is to be read).
FRACTION = "fraction"  # 0..1 (accuracies, ECE); tables show them as %
NATS = "nats"  # mean cross-entropy per sample, KL divergences, log ratios
SAMPLES = "samples"
SECONDS = "s"
COUNT = "count"
NONE = ""  # names, flags, texts, mappings


@dataclass(frozen=True)
class Field:
    """One field of the run record.

    Attributes:
        name: the key.
        type: its JSON type: number, integer, string, boolean, object or array (null is always allowed:
            a measurement that did not run or failed is null).
        unit: how a number reads (FRACTION, NATS, SAMPLES, SECONDS, COUNT, or NONE).
        meaning: one line.
        run: in the top-level record.
        per_epoch: in every per-epoch entry of `history` (of the epochs measured).
        writer: what writes it (train, evaluator, throughput, measurements, pruning).
        test_set: computed on the test set (a search must not optimize it; a pruner cannot follow it).
        headline: also stored as a numeric trial attribute `metric.<name>` in a sweep's study.
    """

    name: str
    type: str
    unit: str
    meaning: str
    writer: str
    run: bool = True
    per_epoch: bool = False
    test_set: bool = False
    headline: bool = False


def _f(name: str, type: str, unit: str, meaning: str, writer: str, **kw: Any) -> Field:
    return Field(name, type, unit, meaning, writer, **kw)


# In the order train() writes them (the order of summary.json).
FIELDS: tuple[Field, ...] = (
    _f("status", "string", NONE, "ok, or diverged (training stopped at a loss blow-up)", "train"),
    _f("measurement_errors", "object", NONE, "{measurement: reason} of every measurement that failed", "train"),
    # --- the per-epoch evaluation (EpochEvaluator), final epoch at the top level
    _f("history", "array", NONE, "one entry per epoch with every per-epoch field", "evaluator"),
    _f("diverged_at_epoch", "integer", COUNT, "the epoch whose training loss diverged (null: none)", "evaluator"),
    _f("diverged_reason", "string", NONE, "why that epoch counts as diverged", "evaluator"),
    _f("initial_loss", "number", NATS, "training loss of the very first batch, before any update", "evaluator"),
    _f("epoch", "integer", COUNT, "the epoch an entry of history describes (1-based)", "evaluator", run=False,
       per_epoch=True),
    _f("train_acc", "number", FRACTION, "training-set accuracy, eval mode (running statistics)", "evaluator",
       per_epoch=True, headline=True),
    _f("test_acc", "number", FRACTION, "test-set accuracy, eval mode (running statistics)", "evaluator",
       per_epoch=True, test_set=True, headline=True),
    _f("acc_gap", "number", FRACTION, "train_acc - test_acc", "evaluator", per_epoch=True, test_set=True,
       headline=True),
    _f("train_loss", "number", NATS, "training-set loss, eval mode", "evaluator", per_epoch=True, headline=True),
    _f("test_loss", "number", NATS, "test-set loss, eval mode", "evaluator", per_epoch=True, test_set=True,
       headline=True),
    _f("val_acc", "number", FRACTION, "validation-split accuracy, eval mode (with data.val_fraction > 0)",
       "evaluator", per_epoch=True, headline=True),
    _f("val_loss", "number", NATS, "validation-split loss, eval mode", "evaluator", per_epoch=True, headline=True),
    _f("train_loss_running", "number", NATS, "mean training loss over the epoch's steps (batch statistics, as the "
       "optimizer saw it)", "evaluator", per_epoch=True),
    _f("train_acc_running", "number", FRACTION, "training accuracy over the epoch's steps (batch statistics)",
       "evaluator", per_epoch=True),
    _f("epoch_lr", "number", NONE, "the learning rate of the epoch's last optimizer step (lr_schedule)", "evaluator",
       run=False, per_epoch=True),
    # --- throughput
    _f("examples_per_sec", "number", "samples/s", "training samples per second, training steps only (the steps "
       "that compiled excluded)", "throughput", headline=True),
    _f("train_time_s", "number", SECONDS, "time in training steps (no evaluation; compiling steps included)",
       "throughput"),
    _f("compiled", "boolean", NONE, "the training forward/backward ran through torch.compile", "throughput"),
    _f("compile_s", "number", SECONDS, "time of the training steps during which torch compiled (0 when not "
       "compiled, or when this process had compiled the same shapes before)", "throughput"),
    _f("compile_steps", "integer", COUNT, "training steps during which torch compiled", "throughput"),
    _f("train_examples_seen", "integer", SAMPLES, "training samples of every step", "throughput"),
    # --- the measurements after epochs (running-statistics calibration, accuracy split, ECE)
    _f("calib_layers", "integer", COUNT, "norm layers with running statistics that were measured", "measurements"),
    _f("calib_mean_rel_err", "number", "ratio", "||mu_ema - mu_pop|| / ||mu_pop||, mean over layers",
       "measurements", per_epoch=True),
    _f("calib_mean_rel_err_worst", "number", "ratio", "the worst layer's calib_mean_rel_err", "measurements",
       per_epoch=True),
    _f("calib_var_log_ratio", "number", NATS, "mean |log(var_ema / var_pop)|, mean over layers", "measurements",
       per_epoch=True),
    _f("calib_var_log_ratio_worst", "number", NATS, "the worst layer's calib_var_log_ratio", "measurements",
       per_epoch=True),
    _f("calib_kl", "number", NATS, "KL(population || EMA) per channel, mean over layers", "measurements",
       per_epoch=True, headline=True),
    _f("calib_kl_worst", "number", NATS, "the worst layer's calib_kl", "measurements", per_epoch=True),
    _f("calib_worst_layer", "string", NONE, "the layer with the largest calib_kl", "measurements", per_epoch=True),
    _f("calib_samples", "integer", SAMPLES, "training samples in the population-statistics pass", "measurements"),
    _f("test_acc_ema", "number", FRACTION, "test accuracy with the running (EMA) statistics (= test_acc unless "
       "recalibrated)", "measurements", test_set=True, headline=True),
    _f("test_acc_precise", "number", FRACTION, "test accuracy with population (precise-BN) statistics",
       "measurements", per_epoch=True, test_set=True, headline=True),
    _f("test_loss_precise", "number", NATS, "test loss with population statistics", "measurements",
       per_epoch=True, test_set=True),
    _f("precise_gain", "number", FRACTION, "test_acc_precise - test_acc_ema", "measurements", per_epoch=True,
       test_set=True, headline=True),
    _f("train_acc_batch", "number", FRACTION, "training accuracy in train mode (batch statistics, training batch "
       "size), final weights", "measurements", headline=True),
    _f("test_acc_batch", "number", FRACTION, "test accuracy with batch statistics at the training batch size",
       "measurements", test_set=True, headline=True),
    _f("test_acc_adabn", "number", FRACTION, "test accuracy with population statistics re-estimated on the test set "
       "(AdaBN)", "measurements", test_set=True, headline=True),
    _f("test_acc_weighted", "number", FRACTION, "test accuracy with inference example weighing (weight "
       "weighted_alpha)", "measurements", test_set=True, headline=True),
    _f("test_ece", "number", FRACTION, "expected calibration error of the predictions behind test_acc",
       "measurements", test_set=True, headline=True),
    _f("test_ece_ema", "number", FRACTION, "ECE of the test predictions with the running (EMA) statistics",
       "measurements", test_set=True),
    _f("test_ece_precise", "number", FRACTION, "ECE of the population-statistics model's test predictions",
       "measurements", per_epoch=True, test_set=True),
    _f("test_ece_batch", "number", FRACTION, "ECE of the test predictions behind test_acc_batch", "measurements",
       test_set=True),
    _f("test_ece_adabn", "number", FRACTION, "ECE of the test predictions behind test_acc_adabn", "measurements",
       test_set=True),
    _f("test_ece_weighted", "number", FRACTION, "ECE of the test predictions behind test_acc_weighted",
       "measurements", test_set=True),
    _f("weighted_alpha", "number", NONE, "an example's weight in the weighted test mode (calib.weighted_alpha; "
       "null there: 1 / norm_batch_size)", "measurements"),
    _f("weighted_method", "string", NONE, "how the weighted test mode ran: batched (an exact change of variables, "
       "checked on the first test examples) or per_example", "measurements"),
    _f("recalibrated", "boolean", NONE, "test_acc/train_acc/acc_gap are the population-statistics model's "
       "(calib.recalibrate)", "measurements"),
    _f("calib_left_out", "integer", SAMPLES, "samples the population pass could not normalize (0 almost always)",
       "measurements"),
    _f("train_acc_batch_left_out", "integer", SAMPLES, "samples the train_acc_batch pass left out", "measurements"),
    _f("test_acc_batch_left_out", "integer", SAMPLES, "samples the test_acc_batch pass left out", "measurements"),
    _f("adabn_left_out", "integer", SAMPLES, "test samples AdaBN's population pass could not normalize",
       "measurements"),
    _f("calib_s", "number", SECONDS, "the per-epoch measurements (population pass, any per-epoch precise test "
       "pass), all epochs together", "measurements"),
    _f("test_modes_s", "object", SECONDS, "{mode: seconds} of each once-per-run test-mode pass after training",
       "measurements"),
    _f("train_acc_ema", "number", FRACTION, "train_acc with the running statistics, beside a recalibrated train_acc",
       "measurements"),
    _f("measurements", "object", NONE, "{measurement: ok | failed} of the measurements that ran", "measurements"),
    # --- a sweep's pruner
    _f("pruned_at_epoch", "integer", COUNT, "the epoch a sweep's pruner stopped the run at (null: not pruned)",
       "pruning"),
    # --- a study part's per-arm tuning (normbench.experiments.tuning): the final runs at each arm's choice
    _f("tuned", "object", NONE, "{key: value} the per-arm tuning chose for this run's arm (null: not tuned)",
       "tuning"),
    _f("tuning_trials", "integer", COUNT, "configurations the arm's tuning tried before choosing", "tuning"),
    _f("tuning_study", "string", NONE, "the Optuna study of the arm's tuning", "tuning"),
    # --- what ran
    _f("epochs", "integer", COUNT, "training epochs run", "train", headline=True),
    _f("optimizer_steps", "integer", COUNT, "optimizer steps taken", "train"),
    _f("wall_s", "number", SECONDS, "the whole run: data, training, measurements", "train", headline=True),
    _f("seed", "integer", NONE, "the run's seed", "train"),
    _f("model", "string", NONE, "model name", "train"),
    _f("norm", "string", NONE, "norm name (canonical)", "train"),
    _f("dataset", "string", NONE, "dataset name", "train"),
    _f("batch_size", "integer", SAMPLES, "data.batch_size: the micro-batch per (emulated) device", "train"),
    _f("batch_composition", "string", NONE, "data.batch_composition: how training batches are drawn (iid, "
       "k_classes)", "train"),
    _f("classes_per_batch", "integer", COUNT, "data.classes_per_batch: classes in each k_classes batch", "train"),
    _f("train_left_out", "integer", SAMPLES, "training samples no batch of an epoch holds", "train"),
    _f("train_batches", "integer", COUNT, "training batches per epoch (per device), after trainer.limit_train_batches "
       "or fast_dev_run", "train"),
    _f("chunk_steps", "integer", COUNT, "optimizer steps per Lightning batch (trainer.chunk_steps resolved; "
       "normbench.training.chunks)", "train"),
    _f("max_steps", "integer", COUNT, "trainer.max_steps: the optimizer-step limit (null: none)", "train"),
    _f("fast_dev_run", "boolean", NONE, "trainer.fast_dev_run: one batch of training and of each eval split, no "
       "measurements after epochs (a smoke test, not a result)", "train"),
    _f("deterministic", "string", NONE, "trainer.deterministic: true, false or warn (deterministic kernels)", "train"),
    _f("numerics", "string", NONE, "the numerics fingerprint: numerics version/torch/CPU capability/deterministic "
       "(normbench.numerics; a record without it is version 1)", "train"),
    _f("checkpoint", "string", NONE, "the run's last.ckpt, rewritten after every epoch (null: "
       "trainer.checkpoint=false)", "train"),
    _f("resumed_from", "string", NONE, "the checkpoint the run resumed from (trainer.ckpt_path; null: started "
       "fresh)", "train"),
    _f("resumed_from_step", "integer", COUNT, "the optimizer step that checkpoint was written at", "train"),
    _f("lr", "number", NONE, "the learning rate the optimizer used (after a sweep's lr_scaling); the base rate that "
       "lr_schedule scales", "train"),
    _f("lr_schedule", "string", NONE, "optim.scheduler: none, cosine or linear (to 0 when training ends), stepped "
       "per optimizer step after warmup_steps", "train"),
    _f("warmup_steps", "integer", COUNT, "optim.warmup_steps: optimizer steps of linear warm-up to lr", "train"),
    _f("schedule_steps", "integer", COUNT, "the optimizer steps a decaying schedule spans, warm-up included (the "
       "run's planned steps; null: no decay)", "train"),
    _f("lr_initial", "number", NONE, "the learning rate of the first optimizer step", "train"),
    _f("lr_final", "number", NONE, "the learning rate of the last optimizer step", "train"),
    _f("norm_weight_decay", "number", NONE, "the weight decay on the norm layers' parameters (scales, shifts)",
       "train"),
    _f("threads", "integer", COUNT, "torch CPU threads of the run", "train"),
    _f("emulate_devices", "integer", COUNT, "data-parallel devices emulated on one", "train"),
    _f("norm_batch_size", "integer", SAMPLES, "samples each norm call normalizes together in training", "train"),
    _f("norm_momentum", "number", NONE, "running-statistics momentum, PyTorch convention (null: cumulative "
       "average)", "train"),
    _f("norm_keras_momentum", "number", NONE, "the same momentum in Keras' convention (1 - momentum)", "train"),
    _f("ema_horizon_samples", "number", SAMPLES, "the running average's horizon: samples per update / momentum",
       "train"),
    _f("norm_groups", "object", NONE, "{norm site: group count} for norms with a groups option", "train"),
    _f("norm_layers", "object", NONE, "{layer kind (conv, fc): the normalization its norm layers computed}, e.g. "
       "norm=in: InstanceNorm after convolutions, LayerNorm after fully connected layers", "train"),
    _f("accumulate_grad_batches", "integer", COUNT, "micro-batches per optimizer step", "train"),
    _f("devices", "integer", COUNT, "data-parallel processes", "train"),
    _f("effective_batch_size", "integer", SAMPLES, "samples behind one optimizer step", "train"),
    _f("n_train", "integer", SAMPLES, "training samples", "train"),
    _f("n_test", "integer", SAMPLES, "test samples", "train"),
    _f("n_params", "integer", COUNT, "model parameters", "train"),
    _f("accelerator", "string", NONE, "cpu or gpu", "train"),
    _f("device_name", "string", NONE, "the GPU's name, or cpu", "train"),
    _f("precision", "string", NONE, "trainer.precision", "train"),
    _f("precision_parts", "object", NONE, "the precision each part computed in: convolutions and linear layers "
       "(bfloat16 under bf16-mixed), norms and batch statistics, running statistics, weights and optimizer, "
       "evaluation and calibration (float32)", "train"),
    _f("channels_last", "boolean", NONE, "model and training batches in channels-last memory format", "train"),
    _f("fast_path", "string", NONE, "trainer.fast_path and what it chose (normbench.training.fast_path)", "train"),
    _f("data_source", "string", NONE, "where the data came from", "train"),
    _f("created_at", "string", NONE, "when the record was written (UTC, ISO 8601)", "train"),
    _f("out_dir", "string", NONE, "the run's folder", "train"),
    _f("git_sha", "string", NONE, "commit of the code that ran (null outside a git checkout)", "train"),
    _f("git_dirty", "boolean", NONE, "the checkout had uncommitted changes", "train"),
    _f("versions", "object", NONE, "python, torch, lightning, numpy, normbench, cuda, platform", "train"),
    _f("machine", "object", NONE, "cpu_model, cpu_count", "train"),
    _f("config", "object", NONE, "the whole resolved run config", "train"),
)

BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}

# The measurements after training, each guarded on its own (record field `measurements` maps them to ok/failed).
MEASUREMENTS = ("calibration", "test_acc_precise", "test_ece", "train_acc_batch", "test_acc_batch",
                "test_acc_adabn", "test_acc_weighted", "recalibrate")


def names(*, writer: str | None = None, run: bool | None = None, per_epoch: bool | None = None,
          test_set: bool | None = None, headline: bool | None = None) -> tuple[str, ...]:
    """The names of the fields matching every given attribute, in record order."""
    out = []
    for f in FIELDS:
        if writer is not None and f.writer != writer:
            continue
        if run is not None and f.run != run:
            continue
        if per_epoch is not None and f.per_epoch != per_epoch:
            continue
        if test_set is not None and f.test_set != test_set:
            continue
        if headline is not None and f.headline != headline:
            continue
        out.append(f.name)
    return tuple(out)


# The per-epoch fields a sweep's pruner can follow: measured at every epoch end, not on the test set.
PER_EPOCH_OBJECTIVES = names(writer="evaluator", per_epoch=True, run=True, test_set=False)
# Stored as numeric trial attributes (`metric.<name>`) in a sweep's study, beside the whole record.
HEADLINE = names(headline=True)

# The numeric fields of the top-level record: what a sweep's objective or a table column can name.
NUMERIC = tuple(f.name for f in FIELDS if f.run and f.type in ("number", "integer"))

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "number": (int, float), "integer": (int,), "string": (str,), "boolean": (bool,), "object": (dict,),
    "array": (list,),
}


def problems(summary: Mapping[str, Any]) -> list[str]:
    """Every way `summary` departs from this definition: undeclared keys (top level and per epoch), wrong types.

    Missing fields are not problems (older records lack newer fields; some are written only when they apply),
    and neither is null, nor a NaN or infinity (the record file holds them as null).
    """
    out = []

    def check(where: str, key: str, value: Any, place: str) -> None:
        field = BY_NAME.get(key)
        if field is None or not getattr(field, place):
            out.append(f"{where}{key}: not declared{'' if field is None else f' as {place}'}")
            return
        if value is None or (isinstance(value, float) and not math.isfinite(value)):  # written as null
            return
        allowed = _JSON_TYPES[field.type]
        wrong_bool = isinstance(value, bool) and bool not in allowed  # JSON true is not a number
        if wrong_bool or not isinstance(value, allowed):
            out.append(f"{where}{key}: {value!r} is not {field.type}")

    for key, value in summary.items():
        check("", key, value, "run")
    history = summary.get("history")
    for i, entry in enumerate(history if isinstance(history, list) else []):  # not a list: reported above
        if entry is None:
            continue
        if not isinstance(entry, Mapping):
            out.append(f"history[{i}]: {entry!r} is not object")
            continue
        for key, value in entry.items():
            check(f"history[{i}].", key, value, "per_epoch")
    return out


def markdown_table(fields: Iterable[Field] = FIELDS) -> str:
    """The README's table of the run record."""
    lines = ["| field | unit | per epoch | meaning |", "| :--- | :--- | :---: | :--- |"]
    for f in fields:
        where = "only" if not f.run else ("yes" if f.per_epoch else "")
        meaning = f.meaning.replace("|", "\\|")
        lines.append(f"| `{f.name}` | {f.unit} | {where} | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - `python -m normbench.record` prints the README table
    print(markdown_table(), end="")
