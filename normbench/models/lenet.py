"""LeNet in the d2l batch-norm chapter's layout.

conv5(6)-norm-act-avgpool2, conv5(16)-norm-act-avgpool2, flatten, fc120-norm-act, fc84-norm-act, fc10,
no padding (28x28 -> 24 -> 12 -> 8 -> 4), Xavier-uniform weights on every conv and linear layer.

`norm_act=always` (the default: the d2l recipe and the committed studies) keeps the activation after every
norm, FRN and EvoNorm included; `norm_act=paper` drops it after a norm that replaces it
(`normbench.models.norm_act`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from torch import nn

from normbench.models.norm_act import NormAct, activation_after
from normbench.models.registry import register_model

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}


class LeNet(nn.Module):
    def __init__(self, norm, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 act: str = "sigmoid", norm_act: str = "always"):
        super().__init__()
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"model 'lenet' needs images of at least 12x12 pixels, got {image_size}")
        Act = ACTIVATIONS[act]

        def after_norm() -> nn.Module:
            return activation_after(norm, Act, norm_act)

        self.features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_channels, 6, kernel_size=5), norm1=norm(6), act1=after_norm(),
            pool1=nn.AvgPool2d(2, 2),
            conv2=nn.Conv2d(6, 16, kernel_size=5), norm2=norm(16), act2=after_norm(), pool2=nn.AvgPool2d(2, 2),
            flatten=nn.Flatten(),
        ))
        self.classifier = nn.Sequential(OrderedDict(
            fc1=nn.Linear(16 * side * side, 120), norm3=norm(120), act3=after_norm(),
            fc2=nn.Linear(120, 84), norm4=norm(84), act4=after_norm(),
            fc3=nn.Linear(84, num_classes),
        ))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("lenet", aliases=("lenet5",))
def lenet(norm, num_classes: int, in_channels: int, image_size: int,
          act: Literal["sigmoid", "relu"] = "sigmoid", norm_act: NormAct = "always") -> nn.Module:
    """d2l LeNet with a norm before each activation (none after FRN/EvoNorm with `norm_act=paper`)."""
    return LeNet(norm, num_classes, in_channels, image_size, act=act, norm_act=norm_act)
