"""train(cfg): the run record, determinism, accumulation bookkeeping, divergence."""

import json
import math

import pytest

from normbench.config import load_config
from normbench.train import train

REQUIRED = ["train_acc", "test_acc", "acc_gap", "train_loss", "test_loss", "epochs", "examples_per_sec", "wall_s",
            "seed", "config", "git_sha", "versions", "history", "norm_batch_size", "effective_batch_size"]


def test_summary_record_fields(tiny_cfg):
    result = train(tiny_cfg("trainer.max_epochs=2"))
    on_disk = json.loads((result.out_dir / "summary.json").read_text())
    for key in REQUIRED:
        assert key in on_disk, key
    assert on_disk["status"] == "ok" and on_disk["epochs"] == 2
    assert on_disk["acc_gap"] == pytest.approx(on_disk["train_acc"] - on_disk["test_acc"])
    assert 0.0 <= on_disk["test_acc"] <= 1.0 and on_disk["examples_per_sec"] > 0
    assert {"python", "torch", "lightning"} <= set(on_disk["versions"])
    assert [h["epoch"] for h in on_disk["history"]] == [1, 2]
    assert on_disk["history"][-1]["test_acc"] == on_disk["test_acc"]
    assert on_disk["config"]["norm"]["name"] == "bn" and on_disk["config"]["out_dir"] == str(result.out_dir)
    # the whole training set was seen once per epoch (drop_last: 256 // 32 * 32 samples)
    assert on_disk["train_examples_seen"] == 2 * 256
    assert not list(result.out_dir.glob(".summary.json.*"))  # no temp file left behind


def test_same_seed_same_numbers(tiny_cfg, tmp_path):
    a = train(tiny_cfg("seed=3", f"out_dir={tmp_path / 'a'}")).summary
    b = train(tiny_cfg("seed=3", f"out_dir={tmp_path / 'b'}")).summary
    c = train(tiny_cfg("seed=4", f"out_dir={tmp_path / 'c'}")).summary
    assert a["history"] == b["history"]
    assert a["history"] != c["history"]


def test_training_learns_the_synthetic_task(tiny_cfg):
    s = train(tiny_cfg("trainer.max_epochs=4", "optim.lr=0.5")).summary
    assert s["test_acc"] > 0.5  # chance is 0.1


def test_accumulation_bookkeeping(tiny_cfg):
    s = train(tiny_cfg("data.batch_size=16", "trainer.accumulate_grad_batches=4")).summary
    assert s["norm_batch_size"] == 16 and s["effective_batch_size"] == 64
    assert s["optimizer_steps"] == 256 // 16 // 4


def test_divergence_is_recorded(tiny_cfg):
    s = train(tiny_cfg("norm=none", "model.act=relu", "optim.lr=1e6", "trainer.max_epochs=3")).summary
    assert s["status"] == "diverged" and s["diverged_at_epoch"] == 1
    assert s["epochs"] < 3


@pytest.mark.parametrize("norm", ["bn_scratch", "gn", "ln", "in", "none"])
def test_other_norms_train(tiny_cfg, norm):
    s = train(tiny_cfg(f"norm={norm}")).summary
    assert s["status"] == "ok" and math.isfinite(s["test_loss"])


def test_resnet20_trains_on_color_images(tiny_cfg):
    s = train(tiny_cfg("model=resnet20", "data.channels=3", "data.image_size=16", "data.num_train=64",
                       "data.batch_size=16", "optim.lr=0.1")).summary
    assert s["status"] == "ok" and s["model"] == "resnet20"


def test_batch_larger_than_dataset_is_rejected(tiny_cfg):
    from normbench.errors import ConfigError

    with pytest.raises(ConfigError, match="data.batch_size=512 is larger than the 256 training samples"):
        train(tiny_cfg("data.batch_size=512"))


def test_train_accepts_plain_dict(tmp_path):
    from normbench.config import compose

    raw = compose(["data=synthetic", "data.num_train=64", "trainer.max_epochs=1", "trainer.progress_bar=false",
                   "trainer.accelerator=cpu", f"out_dir={tmp_path}"])
    assert train(raw).summary["status"] == "ok"


def test_default_config_loads_without_data_access():
    assert load_config([]).data.name == "fashion_mnist"


def test_group_norms_record_each_layers_group_count(tiny_cfg):
    summary = train(tiny_cfg("norm=gn")).summary
    assert summary["norm_groups"] == {"features.norm1": 3, "features.norm2": 8, "classifier.norm3": 30,
                                      "classifier.norm4": 28}
    assert all(c // g >= 2 for c, g in zip((6, 16, 120, 84), summary["norm_groups"].values(), strict=True))


def test_norms_without_groups_record_null(tiny_cfg):
    assert train(tiny_cfg()).summary["norm_groups"] is None
