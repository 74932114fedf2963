"""normbench's written-out optimization step (Classifier, Lightning's manual optimization) computes exactly
what Lightning's automatic loop computes: same weights and running statistics after training with gradient
accumulation (a shorter last window), gradient clipping, a per-step cosine schedule with warm-up (Lightning
steps it after each optimizer step itself) and SGD momentum."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from normbench.data import load_data
from normbench.models import build_model
from normbench.train import quiet_lightning
from normbench.training.module import Classifier


class AutomaticClassifier(Classifier):
    """The same module on Lightning's automatic loop (the reference)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.automatic_optimization = True

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def on_before_optimizer_step(self, optimizer) -> None:  # Lightning clips itself (Trainer's gradient_clip_val)
        pass


def _fit(cls, accumulate: int, clip: float | None, epochs: int = 2,
         profiler: str | None = None) -> tuple[dict[str, torch.Tensor], int, bool]:
    """(weights and buffers, optimizer steps, whether the module stepped directly) after fitting."""
    quiet_lightning()
    data = load_data("synthetic", num_train=150, num_test=16)
    torch.manual_seed(0)
    net = build_model("lenet", "bn", 10, 1, 28)
    optim = {"name": "sgd", "lr": 0.3, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False,
             "scheduler": "cosine", "warmup_steps": 3, "norm_weight_decay": 0.0}
    module = cls(net, optim, accumulate_grad_batches=accumulate, gradient_clip_val=clip)
    trainer_kwargs = {}
    if cls is AutomaticClassifier:
        trainer_kwargs = {"accumulate_grad_batches": accumulate, "gradient_clip_val": clip}
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0,
                        limit_val_batches=0, profiler=profiler, **trainer_kwargs)
    loader = data.loader("train", 8, shuffle=True, seed=0)  # 19 batches: the last window is shorter
    trainer.fit(module, train_dataloaders=loader)
    direct = getattr(module, "_direct", None) is not None
    return {k: v.detach().clone() for k, v in net.state_dict().items()}, trainer.global_step, direct


@pytest.mark.parametrize(("accumulate", "clip", "profiler"), [(1, None, None), (4, 0.5, None), (4, 0.5, "simple")])
def test_manual_step_equals_lightnings_automatic_loop(accumulate, clip, profiler):
    """Without a profiler the module steps directly (DirectStep); with one, through LightningOptimizer.step."""
    ours, our_steps, direct = _fit(Classifier, accumulate, clip, profiler=profiler)
    assert direct is (profiler is None)
    ref, ref_steps, _ = _fit(AutomaticClassifier, accumulate, clip)
    assert our_steps == ref_steps == 2 * -(-19 // accumulate)
    assert ours.keys() == ref.keys()
    for k in ref:
        assert torch.equal(ours[k], ref[k]), k
    assert not torch.equal(ours["features.norm1.running_mean"], torch.zeros_like(ref["features.norm1.running_mean"]))
