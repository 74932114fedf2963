"""One factor at a time: what each configuration's optimizer sees, and contrasts that change it.

A claim that compares normalization batches is only about normalization when the optimizer is the same on
both sides: the same optimizer batch (data.batch_size x emulated devices x accumulation x devices), the same
learning rate and the same number of optimizer steps. Under the linear scaling rule, shrinking the batch per
worker also shrinks the optimizer batch, the lr and multiplies the steps, so a norm-batch effect and an
optimizer effect are mixed.

A study part can hold the optimizer batch fixed while the normalization batch changes, through emulated
workers:

    parts:
      ofat:
        fixed_optimizer_batch: 256       # data.batch_size x trainer.emulate_devices x accumulation = 256
        grid: {norm: [bn, gn], data.batch_size: [256, 32, 4]}   # -> emulate_devices 1, 8, 64

`fixed_optimizer_batch` turns every value b of data.batch_size (a grid dimension, a linked one, or the base)
into `{data.batch_size: b, trainer.emulate_devices: F / (b x accumulation)}`; a b that does not divide F is
refused. Every cell then has the same optimizer batch, the same lr (with or without lr_scaling) and, at the
same epochs, the same steps.

At load, `check_contrasts` works out per grid configuration its optimizer batch, lr and planned optimizer
steps (`config_facts`) and refuses a claim whose compared configurations differ in any of them, unless the
claim declares `confounded: "<why>"` (shown in claims.json and the README). Steps are compared within 1%:
an epoch's trailing partial accumulation adds one optimizer step (accumulation's 4 x 64 makes 235 steps an
epoch where 256 x 1 makes 234), which is not a different schedule. Contrasting kinds: difference (a vs b,
unless both are one configuration), range_less and argmin_ratio (every configuration of a and b), argmin_between
(the selection), extreme and rank (the selection and `among`). mean_within, correlation and frequency contrast
no configurations.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from normbench.errors import ConfigError

FIXED_KEY = "fixed_optimizer_batch"
STEPS_TOLERANCE = 0.01  # relative: one trailing partial step per epoch is not a different schedule
_OWN_KEYS = ("norm", "model")  # choices and options that do not change the optimizer's batch, lr or steps


def _fail(study: str, msg: str) -> ConfigError:
    return ConfigError(f"study {study}: {msg}")


# ---------------------------------------------------------------------------------------------- fixed batch


def fixed_optimizer_batch(study: str, part: str, sweep: dict[str, Any]) -> dict[str, Any]:
    """The part's sweep mapping with `fixed_optimizer_batch: F` replaced by per-cell trainer.emulate_devices."""
    if FIXED_KEY not in sweep:
        return sweep
    sweep = dict(sweep)
    total = sweep.pop(FIXED_KEY)
    where = f"part '{part}': {FIXED_KEY}"
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise _fail(study, f"{where} must be an integer >= 1 (the optimizer batch every cell keeps), got {total!r}")
    base = dict(sweep.get("base") or {})
    grid = dict(sweep.get("grid") or {})
    for key in ("trainer.emulate_devices", "trainer.accumulate_grad_batches", "trainer.devices"):
        swept = key in grid or any(isinstance(v, Mapping) and key in v for vals in grid.values()
                                   if isinstance(vals, list) for v in vals)
        if swept or (key == "trainer.emulate_devices" and key in base):
            raise _fail(study, f"{where} derives trainer.emulate_devices from data.batch_size; remove {key} from "
                               "the part's " + ("grid" if swept else "base"))
    accumulate = base.get("trainer.accumulate_grad_batches", 1)
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise _fail(study, f"part '{part}': trainer.accumulate_grad_batches must be an integer >= 1, "
                           f"got {accumulate!r}")

    def emulated(b: Any) -> int:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1 or total % (b * accumulate):
            raise _fail(study, f"{where} {total} is not a multiple of data.batch_size {b!r} x accumulation "
                               f"{accumulate}; accepted batch sizes: the divisors of {total // accumulate}")
        return total // (b * accumulate)

    found = False
    if "data.batch_size" in base:
        base["trainer.emulate_devices"] = emulated(base["data.batch_size"])
        found = True
    for label, values in list(grid.items()):
        if label == "data.batch_size" and isinstance(values, list):
            grid[label] = [{"data.batch_size": b, "trainer.emulate_devices": emulated(b)} for b in values]
            found = True
        elif isinstance(values, list) and values and all(isinstance(v, Mapping) for v in values) and \
                any("data.batch_size" in v for v in values):
            if not all("data.batch_size" in v for v in values):
                raise _fail(study, f"{where}: every value of grid '{label}' must set data.batch_size")
            grid[label] = [{**v, "trainer.emulate_devices": emulated(v["data.batch_size"])} for v in values]
            found = True
    if not found:
        raise _fail(study, f"{where} needs data.batch_size in the part's base or grid")
    sweep["base"], sweep["grid"] = base, grid
    return sweep


# ---------------------------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class Facts:
    """What the optimizer of one configuration sees (steps None when the training set's size is unknown)."""

    optimizer_batch: int
    lr: float
    steps: int | None
    epochs: int

    def describe(self) -> str:
        steps = "?" if self.steps is None else f"{self.steps:,}"
        return f"optimizer batch {self.optimizer_batch}, lr {self.lr:g}, {steps} steps"


def _set_dotted(node: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        child = node.get(p)
        if not isinstance(child, dict):
            child = node[p] = {}
        node = child
    node[leaf] = value


def train_size(data: Mapping[str, Any]) -> int | None:
    """Training examples per epoch of a composed data section: the dataset's size (its registry `sizes`),
    after train_subset and the validation split; None for a dataset that does not declare its size."""
    from normbench.data.registry import DATASETS

    try:
        entry = DATASETS.get(str(data["name"]))
    except Exception:  # noqa: BLE001 - an unknown or user dataset: its size is not known before loading
        return None
    sizes = entry.meta.get("sizes")
    if sizes is None:
        return None
    params = inspect.signature(sizes).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    options = {k: v for k, v in data.items() if takes_all or k in params}
    options.pop("name", None)
    try:
        n = int(sizes(**options)[0])
    except (TypeError, ValueError):
        return None
    if data.get("train_subset"):
        n = min(n, int(data["train_subset"]))
    fraction = float(data.get("val_fraction") or 0.0)
    if fraction > 0:
        n -= max(1, int(round(n * fraction)))
    return n


def facts_of(cfg: Mapping[str, Any], lr_scaling: Mapping[str, Any] | None) -> Facts:
    """The optimizer batch, lr and planned optimizer steps of a composed (plain) run config."""
    data, trainer, optim = cfg["data"], cfg["trainer"], cfg["optim"]
    devices = trainer.get("devices", 1)
    devices = devices if isinstance(devices, int) and not isinstance(devices, bool) else 1
    per_step = int(data["batch_size"]) * int(trainer.get("emulate_devices") or 1) * devices
    accumulate = int(trainer.get("accumulate_grad_batches") or 1)
    opt_batch = per_step * accumulate
    lr = float(optim["lr"])
    if lr_scaling:
        lr *= opt_batch / int(lr_scaling["base_batch_size"])
    epochs = int(trainer["max_epochs"])
    n = train_size(data)
    steps = None
    if n is not None:
        batches = n // per_step if data.get("drop_last", True) else math.ceil(n / per_step)
        limit = trainer.get("limit_train_batches")
        if isinstance(limit, int) and not isinstance(limit, bool):
            batches = min(batches, limit)
        elif isinstance(limit, float):
            batches = int(batches * limit)
        steps = epochs * math.ceil(batches / accumulate)  # Lightning steps on an epoch's last, partial group
        if trainer.get("max_steps"):
            steps = min(steps, int(trainer["max_steps"]))
    return Facts(opt_batch, lr, steps, epochs)


def config_facts(spec: Any) -> list[tuple[dict[str, Any], Facts]]:
    """(grid combination, Facts) for every configuration of a part's sweep spec.

    Composes the part's base once per distinct choice of the config groups that decide the optimizer (data,
    optim, trainer), without the norm's and model's choices and options, then sets each combination's keys.
    """
    import copy

    from normbench.config import compose
    from normbench.sweep.plan import format_override, is_group_key

    def relevant(key: str) -> bool:
        return key.split(".", 1)[0] not in _OWN_KEYS

    composed: dict[str, dict[str, Any]] = {}
    out = []
    for combo in spec.grid_combinations() or [{}]:
        values = {k: v for k, v in {**spec.base, **combo}.items() if relevant(k)}
        groups = {k: v for k, v in values.items() if is_group_key(k)}
        key = repr(sorted(groups.items()))
        if key not in composed:
            try:
                composed[key] = compose([format_override(k, v) for k, v in groups.items()])
            except ConfigError as e:
                raise ConfigError(f"sweep {spec.name}: {e}") from None
        cfg = copy.deepcopy(composed[key])
        for k, v in values.items():
            if k not in groups:
                _set_dotted(cfg, k, v)
        out.append((combo, facts_of(cfg, spec.lr_scaling)))
    return out


# ---------------------------------------------------------------------------------------------- contrasts


def matches_combo(combo: Mapping[str, Any], selector: Mapping[str, Any]) -> bool:
    """Whether a grid combination has every value a claim's selector names (the seed aside)."""
    from normbench.report.table_model import format_value

    return all(k in combo and format_value(combo[k]) == format_value(v) for k, v in selector.items() if k != "seed")


def compared(test: Mapping[str, Any], facts: list[tuple[dict[str, Any], Facts]]) -> list[tuple[dict[str, Any], Facts]]:
    """The configurations a claim's test contrasts (empty for kinds that contrast none)."""
    from normbench.report.table_model import format_value

    kind = test["kind"]

    def pick(selector: Mapping[str, Any], over: str | None = None) -> list[tuple[dict[str, Any], Facts]]:
        found = [(c, f) for c, f in facts if matches_combo(c, selector)]
        if over is not None and over in {k for c, _ in facts for k in c}:
            found = [(c, f) for c, f in found if over in c]
            if test.get("values") is not None:
                keep = {format_value(v) for v in test["values"]}
                found = [(c, f) for c, f in found if format_value(c[over]) in keep]
        return found

    if kind == "difference":
        a, b = pick(test["a"]), pick(test["b"])
        return [*a[:1], *b[:1]] if len(a) == 1 and len(b) == 1 and a[0][0] != b[0][0] else []
    if kind in ("range_less", "argmin_ratio"):
        return pick(test["a"], test["over"]) + pick(test["b"], test["over"])
    if kind == "argmin_between":
        return pick(test["select"], test["over"])
    if kind in ("extreme", "rank"):
        return pick(test["select"]) + pick(test["among"])
    return []


def differing(group: list[tuple[dict[str, Any], Facts]]) -> list[str]:
    """What differs among the configurations: 'optimizer batch (16 vs 256)', 'lr (...)', 'optimizer steps (...)'."""
    out = []
    batches = sorted({f.optimizer_batch for _, f in group})
    if len(batches) > 1:
        out.append(f"optimizer batch ({' vs '.join(str(b) for b in batches)})")
    lrs = sorted({f.lr for _, f in group})
    if len(lrs) > 1 and not math.isclose(lrs[0], lrs[-1], rel_tol=1e-9):
        out.append(f"lr ({' vs '.join(f'{x:g}' for x in lrs)})")
    steps = sorted({f.steps for _, f in group if f.steps is not None})
    if len(steps) > 1 and steps[-1] > steps[0] * (1 + STEPS_TOLERANCE):
        out.append(f"optimizer steps ({' vs '.join(f'{s:,}' for s in steps)})")
    return out


def check_contrasts(exp: Any) -> None:
    """Refuses (one ConfigError line naming the claim) a contrast across optimizer batch, lr or steps that
    does not declare `confounded:`."""
    facts: dict[str, list[tuple[dict[str, Any], Facts]]] = {}
    for claim in exp.claims:
        if claim.get("confounded"):
            continue
        part = claim["test"]["part"]
        if part not in facts:
            facts[part] = config_facts(exp.parts[part])
        diff = differing(compared(claim["test"], facts[part]))
        if diff:
            raise _fail(exp.name, f"claim '{claim['id']}' contrasts configurations that differ in {', '.join(diff)}: "
                                  "not one factor at a time; hold them fixed (e.g. the part's fixed_optimizer_batch) "
                                  "or declare the claim's `confounded: \"<why>\"`")
