"""ResNets with the norm factory threaded to every site (stem, blocks, downsample).

- `resnet18`: 4 stages of 2 basic blocks (64..512 channels) with a 3x3 stride-1 stem and no max-pool,
  the usual variant for 28x28/32x32 inputs.
- `resnet20` / `resnet56`: He et al.'s CIFAR ResNets, 3 stages of n basic blocks (16/32/64 channels),
  depth = 6n + 2. Shortcuts that change shape are 1x1 conv + norm (option B), so the norm is used
  there too.
- `resnet18_imagenet`: torchvision's stem (7x7 stride 2 + max-pool) for larger images.
- `resnet_fmnist`: the same CIFAR layout at a depth (6n + 2, default 8) and base width (default 8) that a
  2-core CPU can afford for a study on 28x28 Fashion-MNIST (configs/experiment/resnet_fmnist.yaml and
  the README's Workloads section give its recipe, accuracy and cost). Its full-size version, for GPU users,
  is ResNet-20 or ResNet-56 on CIFAR-10: `model=resnet20 data=cifar10` (or `model=resnet_fmnist
  model.depth=20 data=cifar10`, the same network).

A norm follows every convolution, the shortcut projections' included (the GN paper's setting); ReLU follows
the stem's norm and each block's first norm, and the sum of each block. `norm_act=paper` (the default here)
puts no ReLU after a norm that replaces its activation (FRN + TLU, EvoNorm-B0/S0; their papers' use), and
`norm_act=always` a ReLU after it all the same (`normbench.models.norm_act`). Where no activation follows a
norm (a block's last norm, before the sum, and the shortcut's), FRN and EvoNorm keep their nonlinearity: the
variants without it that some implementations use there (timm's `apply_act=False`) are not provided.

Submodules are named `norm1`/`norm2`, not `bn1`, since the norm is whatever the factory makes.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from normbench.models.norm_act import NormAct, activation_after
from normbench.models.registry import register_model


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def relu() -> nn.Module:
    return nn.ReLU(inplace=True)


class BasicBlock(nn.Module):
    def __init__(self, norm, cin: int, cout: int, stride: int = 1, norm_act: str = "paper"):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.norm1 = norm(cout)
        self.act1 = activation_after(norm, relu, norm_act)
        self.conv2 = conv3x3(cout, cout)
        self.norm2 = norm(cout)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(cin, cout, 1, stride=stride, bias=False), norm=norm(cout)))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act2(out + identity)


class ResNet(nn.Module):
    def __init__(self, norm, blocks: list[int], widths: list[int], num_classes: int, in_channels: int,
                 stem: str = "cifar", zero_init_residual: bool = False, norm_act: str = "paper"):
        super().__init__()
        w0 = widths[0]
        if stem == "imagenet":
            self.stem = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_channels, w0, 7, stride=2, padding=3, bias=False), norm=norm(w0),
                act=activation_after(norm, relu, norm_act), pool=nn.MaxPool2d(3, stride=2, padding=1)))
        else:
            self.stem = nn.Sequential(OrderedDict(conv=conv3x3(in_channels, w0), norm=norm(w0),
                                                  act=activation_after(norm, relu, norm_act)))
        layers, cin = [], w0
        for i, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            stage = []
            for j in range(n):
                stage.append(BasicBlock(norm, cin, w, stride=2 if (i > 0 and j == 0) else 1, norm_act=norm_act))
                cin = w
            layers.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)
        self.zero_init_residual = zero_init_residual
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def init_after_norms(self) -> None:
        """Zero-init each block's last norm scale so blocks start as identities (Goyal et al. 2017).

        For a norm without a learnable scale (affine=False, `none`), the block's last conv is zeroed
        instead, which also makes the residual branch output zero at initialization.
        """
        if not self.zero_init_residual:
            return
        for m in self.modules():
            if isinstance(m, BasicBlock):
                weight = getattr(m.norm2, "weight", None)
                if isinstance(weight, nn.Parameter):
                    nn.init.zeros_(weight)
                else:
                    nn.init.zeros_(m.conv2.weight)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))


@register_model("resnet18")
def resnet18(norm, num_classes: int, in_channels: int, image_size: int,
             zero_init_residual: bool = False, norm_act: NormAct = "paper") -> nn.Module:
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool (for 28x28/32x32 inputs)."""
    return ResNet(norm, [2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_channels,
                  zero_init_residual=zero_init_residual, norm_act=norm_act)


@register_model("resnet18_imagenet")
def resnet18_imagenet(norm, num_classes: int, in_channels: int, image_size: int,
                      zero_init_residual: bool = False, norm_act: NormAct = "paper") -> nn.Module:
    """ResNet-18 with torchvision's ImageNet stem (7x7 stride-2 conv + 3x3 max-pool)."""
    return ResNet(norm, [2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_channels, stem="imagenet",
                  zero_init_residual=zero_init_residual, norm_act=norm_act)


def cifar_blocks(depth: int) -> int:
    """Basic blocks per stage of a CIFAR ResNet of `depth` = 6n + 2 weighted layers; ValueError otherwise."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, ...), got {depth}")
    return (depth - 2) // 6


def cifar_resnet(depth: int):
    n = cifar_blocks(depth)

    def build(norm, num_classes: int, in_channels: int, image_size: int,
              zero_init_residual: bool = False, norm_act: NormAct = "paper") -> nn.Module:
        return ResNet(norm, [n, n, n], [16, 32, 64], num_classes, in_channels,
                      zero_init_residual=zero_init_residual, norm_act=norm_act)

    build.__doc__ = f"He et al. CIFAR ResNet-{depth}: 3 stages of {n} basic blocks, 16/32/64 channels."
    return build


register_model("resnet20")(cifar_resnet(20))
register_model("resnet56")(cifar_resnet(56))


def check_fmnist_options(options: dict) -> None:
    """resnet_fmnist's option ranges, checked when a config is validated (before any work)."""
    depth, width = options.get("depth", 8), options.get("width", 8)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"model.depth must be 6n+2 with n >= 1 (accepted: 8, 14, 20, 26, 32, ...), got {depth}")
    if width < 1:
        raise ValueError(f"model.width must be an integer >= 1, got {width}")


@register_model("resnet_fmnist", check=check_fmnist_options)
def resnet_fmnist(norm, num_classes: int, in_channels: int, image_size: int, depth: int = 8, width: int = 8,
                  zero_init_residual: bool = False, norm_act: NormAct = "paper") -> nn.Module:
    """A CPU-sized ReLU ResNet for Fashion-MNIST: He et al.'s CIFAR layout (3 stages of (depth - 2) / 6
    basic blocks, widths `width`, 2 x `width`, 4 x `width`; 28 -> 14 -> 7 pixels), a norm after every
    convolution. depth=20, width=16 is ResNet-20 (the full-size version: `model=resnet20 data=cifar10`)."""
    check_fmnist_options({"depth": depth, "width": width})
    n = cifar_blocks(depth)
    return ResNet(norm, [n, n, n], [width, 2 * width, 4 * width], num_classes, in_channels,
                  zero_init_residual=zero_init_residual, norm_act=norm_act)
