"""Momentum conventions: keras_momentum is 1 - momentum for every momentum-based norm; summary fields."""

import pytest
import torch

from normbench.config import load_config
from normbench.errors import ConfigError
from normbench.norms import available, build_norm, get
from normbench.norms.options import keras_to_torch, resolve_momentum
from normbench.run_facts import running_stats_fields
from normbench.train import train

MOMENTUM_NORMS = [n for n in available() if "momentum" in get(n).options]


def test_every_momentum_norm_takes_keras_momentum():
    assert {"bn", "bn_scratch", "sync_bn", "ghost_bn", "brn", "in", "evonorm_b0"} <= set(MOMENTUM_NORMS)
    assert all("keras_momentum" in get(n).options for n in MOMENTUM_NORMS)


@pytest.mark.parametrize("name", MOMENTUM_NORMS)
def test_keras_099_equals_momentum_001(name):
    extra = {"track_running_stats": True} if "track_running_stats" in get(name).options else {}
    torch.manual_seed(0)
    keras = build_norm(name, 3, keras_momentum=0.99, **extra).double()
    torch.manual_seed(0)
    torch_convention = build_norm(name, 3, momentum=0.01, **extra).double()
    assert keras.momentum == torch_convention.momentum == 0.01
    for step in range(3):
        x = torch.randn(8, 3, 4, 4, dtype=torch.float64) * 2 + step
        torch.testing.assert_close(keras(x), torch_convention(x), rtol=0, atol=0)
    state, ref = keras.state_dict(), torch_convention.state_dict()
    assert state.keys() == ref.keys() and any("running" in k for k in state)
    assert all(torch.equal(state[k], ref[k]) for k in state)


def test_conversion_and_conflicts():
    assert keras_to_torch(0.99) == 0.01 and keras_to_torch(0.9) == 0.1 and keras_to_torch(1.0) == 0.0
    assert resolve_momentum("bn", 0.1, 0.99) == 0.01  # momentum at its default: keras_momentum decides
    assert resolve_momentum("bn", 0.01, 0.99) == 0.01  # both given, and they agree
    assert resolve_momentum("bn", None, None) is None
    with pytest.raises(ValueError, match="norm 'bn': give momentum .* or keras_momentum, not both"):
        build_norm("bn", 4, momentum=0.05, keras_momentum=0.99)
    with pytest.raises(ValueError, match=r"norm 'brn': keras_momentum must be in \[0, 1\]"):
        build_norm("brn", 4, keras_momentum=1.5)
    with pytest.raises(ConfigError, match="norm 'ghost_bn': give momentum"):
        load_config(["data=synthetic", "norm=ghost_bn", "norm.momentum=0.2", "norm.keras_momentum=0.99"])


@pytest.mark.parametrize(("overrides", "expected"), [
    (["norm.keras_momentum=0.99"], (0.01, 0.99, 32 / 0.01)),
    (["norm.momentum=0.1"], (0.1, 0.9, 320.0)),
    (["norm=ghost_bn", "norm.ghost_batch_size=8", "norm.momentum=0.5"], (0.5, 0.5, 64.0)),  # whole batch per update
    (["norm=sync_bn", "trainer.devices=2", "norm.momentum=0.5"], (0.5, 0.5, 128.0)),  # the ranks' batch
    (["norm=bn", "norm.track_running_stats=false"], (0.1, 0.9, None)),
    (["norm=in"], (0.1, 0.9, None)),  # instance norm keeps no running statistics by default
    (["norm=gn"], (None, None, None)),
])
def test_running_stats_fields(overrides, expected):
    cfg = load_config(["data=synthetic", "data.batch_size=32", "trainer.accelerator=cpu", *overrides])
    fields = running_stats_fields(cfg)
    assert (fields["norm_momentum"], fields["norm_keras_momentum"], fields["ema_horizon_samples"]) == expected


def test_summary_records_momentum_and_horizon(tiny_cfg):
    result = train(tiny_cfg("data.batch_size=32", "norm.keras_momentum=0.99"))
    s = result.summary
    assert (s["norm_momentum"], s["norm_keras_momentum"], s["ema_horizon_samples"]) == (0.01, 0.99, 3200.0)
    # cumulative average: everything the layer saw (256 samples / 32 = 8 updates of 32 samples)
    s = train(tiny_cfg("data.batch_size=32", "norm.momentum=null")).summary
    assert (s["norm_momentum"], s["norm_keras_momentum"], s["ema_horizon_samples"]) == (None, None, 256)
