"""Learning-rate schedules (optim.scheduler, optim.warmup_steps), read off the optimizer during real tiny runs: the
rate of every optimizer step is the closed form's, a decay ends at exactly 0 after the run's last step, the run's
step count is planned exactly (accumulation windows, limit_train_batches, max_steps), chunked steps and a resumed
run train at the same rates to the same numbers, and what cannot run is one error line."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch

from normbench.cli import main
from normbench.config import load_config
from normbench.errors import ConfigError
from normbench.overrides import differences
from normbench.train import train
from normbench.training.schedule import Schedule, run_steps
from tests.helpers import TINY, CrashAtEpoch
from tests.test_checkpoint import assert_same_record

LR = 0.5
# 256 samples in batches of 24 without drop_last: 11 batches an epoch (the last of 16); 3 micro-batches per
# optimizer step: windows of 3, 3, 3 and 2, so 4 optimizer steps an epoch and 12 in 3 epochs.
RUN = [*TINY, "trainer.max_epochs=3", "trainer.threads=1", "data.batch_size=24", "data.drop_last=false",
       "trainer.accumulate_grad_batches=3", f"optim.lr={LR}", "optim.momentum=0.9", "calib.enabled=false"]
STEPS_PER_EPOCH = 4


def expected_factor(name: str, warmup: int, total: int | None, step: int) -> float:
    """The documented schedule, written independently of normbench.training.schedule (cosine as cos^2)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if name == "none":
        return 1.0
    assert total is not None
    p = (step - warmup) / (total - warmup)
    return math.cos(math.pi * p / 2) ** 2 if name == "cosine" else 1 - p


class RateLog(L.Callback):
    """The optimizer's rate (every parameter group) at each optimizer step, and after training."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.rates: list[list[float]] = []
        self.after: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.steps.append(trainer.global_step)
        self.rates.append([g["lr"] for g in optimizer.param_groups])

    def on_train_end(self, trainer, pl_module) -> None:
        self.after = [g["lr"] for g in trainer.optimizers[0].param_groups]


def _run(out, *overrides: str, callbacks: tuple = ()):
    log = RateLog()
    result = train(load_config([*RUN, f"out_dir={out}", *overrides]), callbacks=[log, *callbacks])
    return result, log


@pytest.mark.parametrize(("name", "warmup", "overrides", "total", "per_epoch"), [
    # drop_last: 10 batches, windows of 5 and 5 (without it: 11 batches, 3 steps an epoch)
    ("cosine", 0, ["data.drop_last=true", "trainer.accumulate_grad_batches=5"], 6, 2),
    ("cosine", 5, ["trainer.limit_train_batches=7"], 9, 3),  # 7 batches: windows 3, 3, 1
    ("linear", 3, ["trainer.max_steps=10", "optim.weight_decay=0.01", "optim.norm_weight_decay=0.0"], 10, 4),
    ("none", 4, [], 12, 4),
    ("none", 0, [], 12, 4),
], ids=["cosine-drop-last", "cosine-warmup-limit", "linear-warmup-max-steps-2-groups", "warmup-only", "constant"])
def test_every_steps_rate_is_the_closed_form(name, warmup, overrides, total, per_epoch, tmp_path):
    result, log = _run(tmp_path, f"optim.scheduler={name}", f"optim.warmup_steps={warmup}", "logger=csv",
                       *overrides)
    s = result.summary
    assert s["optimizer_steps"] == total and log.steps == list(range(total))
    groups = 2 if "optim.weight_decay=0.01" in overrides else 1
    assert all(len(r) == groups for r in log.rates)
    decays = name != "none"
    for step, rates in zip(log.steps, log.rates, strict=True):
        want = LR * expected_factor(name, warmup, total if decays else None, step)
        assert rates == pytest.approx([want] * groups, rel=1e-12, abs=0), step
    if decays:  # the rate reaches exactly 0 when training ends; the last step still trained
        assert log.after == [0.0] * groups and log.rates[-1][0] > 0
        assert all(a[0] > b[0] for a, b in zip(log.rates[warmup:-1], log.rates[warmup + 1:], strict=True))
    if warmup:
        assert log.rates[0][0] == pytest.approx(LR / (warmup + 1), rel=1e-12)
        assert log.rates[warmup][0] == LR  # the warm-up's end is the base rate, where any decay starts
    if name == "none" and warmup == 0:  # no scheduler at all: the optimizer's rate is never touched
        assert result.module._scheduler is None and set(sum(log.rates, [])) == {LR}
    # the record: schedule, warm-up, planned steps, first and last step's rate, each epoch's last rate
    assert (s["lr"], s["lr_schedule"], s["warmup_steps"]) == (LR, name, warmup)
    assert s["schedule_steps"] == (total if decays else None)
    assert (s["lr_initial"], s["lr_final"]) == (log.rates[0][0], log.rates[-1][0])
    last_of_epoch = [min(e * per_epoch, total) - 1 for e in range(1, len(s["history"]) + 1)]
    assert [h["epoch_lr"] for h in s["history"]] == [log.rates[t][0] for t in last_of_epoch]
    with open(tmp_path / "metrics.csv", newline="") as f:
        logged = [float(r["epoch_lr"]) for r in csv.DictReader(f) if r.get("epoch_lr")]
    assert logged == pytest.approx([h["epoch_lr"] for h in s["history"]], rel=1e-6)  # logged as float32


def test_chunked_steps_train_at_the_same_rates_to_the_same_weights(tmp_path):
    """Accumulation windows split across chunks (auto: 32 steps a chunk) or one batch a Lightning step."""
    runs = [_run(tmp_path / c, "optim.scheduler=cosine", "optim.warmup_steps=2", "trainer.max_epochs=2",
                 f"trainer.chunk_steps={c}") for c in ("1", "auto", "3")]
    (one, log1), *others = runs
    assert one.summary["chunk_steps"] == 1 and {r.summary["chunk_steps"] for r, _ in others} == {32, 3}
    ref = one.module.net.state_dict()
    for result, log in others:
        assert log.rates == log1.rates and log.after == log1.after == [0.0]
        weights = result.module.net.state_dict()
        assert weights.keys() == ref.keys() and all(torch.equal(weights[k], ref[k]) for k in ref)
        assert result.summary["history"] == one.summary["history"]


SCHEDULED = ["optim.scheduler=cosine", "optim.warmup_steps=3", "data.augment=true", "logger=csv"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("whole"), *SCHEDULED)


def test_a_resumed_scheduled_run_equals_the_uninterrupted_one(uninterrupted, tmp_path):
    whole, whole_log = uninterrupted
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(out, *SCHEDULED, callbacks=(CrashAtEpoch(2),))
    resumed, log = _run(out, *SCHEDULED, "trainer.ckpt_path=last")
    assert resumed.summary["resumed_from_step"] == STEPS_PER_EPOCH
    # the resumed process trains at the rates of the uninterrupted run's later steps, bit for bit
    assert log.steps == whole_log.steps[STEPS_PER_EPOCH:] and log.rates == whole_log.rates[STEPS_PER_EPOCH:]
    assert log.after == whole_log.after == [0.0]
    assert_same_record(resumed.summary, whole.summary)  # weights' figures, history, lr_initial/lr_final
    ref, ours = whole.module.net.state_dict(), resumed.module.net.state_dict()
    assert all(torch.equal(ours[k], ref[k]) for k in ref)


def test_a_decaying_run_resumes_only_at_its_planned_length(uninterrupted, tmp_path):
    ckpt = uninterrupted[0].summary["checkpoint"]
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs: 3 -> 4\); optim\.scheduler=cosine decays to 0 "
                                          r"over the planned run, so its length is fixed"):
        train(load_config([*RUN, *SCHEDULED, f"out_dir={tmp_path}", f"trainer.ckpt_path={ckpt}",
                           "trainer.max_epochs=4"]))


def test_a_warmup_longer_than_the_run_is_one_error_line(tmp_path, capsys):
    code = main(["run", *RUN, f"out_dir={tmp_path}", "optim.scheduler=linear", "optim.warmup_steps=12"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == ("error: optim.warmup_steps=12 leaves no steps for optim.scheduler=linear to decay over: the "
                      "run makes 12 optimizer steps; accepted: warmup_steps < 12, a longer run, or "
                      "optim.scheduler=none")
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written


def test_the_planned_steps_and_the_schedules_ends():
    assert run_steps(11, 3, 3, None) == 12 and run_steps(11, 3, 3, 10) == 10 and run_steps(12, 3, 2, -1) == 8
    assert run_steps(5, 1, None, 7) == 7
    with pytest.raises(ValueError, match="planned end"):
        run_steps(5, 1, -1, None)
    for name in ("cosine", "linear"):
        s = Schedule(name, 4, 20)
        assert s.factor(20) == 0.0 and s.factor(4) == 1.0 and s.factor(3) == 4 / 5 and 0 < s.factor(19) < 0.1
    assert Schedule("none", 4).factor(1000) == 1.0 and Schedule().factor(0) == 1.0
    with pytest.raises(ConfigError, match="warmup_steps=5 leaves no steps"):
        Schedule("cosine", 5, 5)


def test_a_config_from_before_warm_up_existed_compares_as_no_warm_up():
    """Checkpoints and sweep studies stored without optim.warmup_steps resume under its default, 0, only."""
    old = {"optim": {"name": "sgd", "lr": 1.0, "scheduler": "none"}}
    assert differences(old, {"optim": {**old["optim"], "warmup_steps": 0}}) == []
    assert differences(old, {"optim": {**old["optim"], "warmup_steps": 5}}) == [("optim.warmup_steps", 0, 5)]
