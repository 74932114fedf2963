"""The GPU path (opt in with `pytest -m gpu`; skipped without CUDA)."""

import pytest
import torch

from normbench.train import train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("precision", ["32", "bf16-mixed", "16-mixed"])
def test_short_recipe_on_cuda(tiny_cfg, precision):
    s = train(tiny_cfg("trainer.accelerator=gpu", f"trainer.precision={precision}", "trainer.max_epochs=2",
                       "data.num_train=2048", "data.batch_size=256", "optim.lr=0.5")).summary
    assert s["status"] == "ok" and s["accelerator"] == "gpu" and s["device_name"] != "cpu"
    assert s["test_acc"] > 0.3 and s["examples_per_sec"] > 0


def test_auto_picks_the_gpu_and_keeps_data_there(tiny_cfg):
    result = train(tiny_cfg("trainer.accelerator=auto"))
    assert result.summary["accelerator"] == "gpu"
    assert next(result.module.parameters()).device.type == "cuda"
