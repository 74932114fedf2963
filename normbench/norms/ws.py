"""GroupNorm with Weight-Standardized convolutions (Qiao et al. 2019), `gn_ws`.

Weight standardization reparametrizes every convolution's weight per output channel:

    W_hat = (W - mean(W)) / sqrt(var(W) + ws_eps)    (mean and biased variance over in_channels x kH x kW)

and the layer convolves with W_hat. It is a property of the convolutions, not of the norm layer, so the
`gn_ws` entry carries a `conv_transform` in its registry metadata: `build_model` applies it to every
nn.Conv2d of the model (stem, blocks, downsample shortcuts) when `gn_ws` is the norm. `build_norm("gn_ws", C)`
alone gives the GroupNorm only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from normbench.norms.group import check_group_options, resolve_groups
from normbench.norms.registry import register_norm

DEFAULT_WS_EPS = 1e-5


def standardize_weight(weight: torch.Tensor, eps: float = DEFAULT_WS_EPS) -> torch.Tensor:
    """Zero mean, unit (biased) variance per output channel of a conv weight (out, in, *kernel)."""
    flat = weight.reshape(weight.shape[0], -1)
    var, mean = torch.var_mean(flat, dim=1, unbiased=False, keepdim=True)
    return ((flat - mean) * torch.rsqrt(var + eps)).reshape_as(weight)


class WSConv2d(nn.Conv2d):
    """nn.Conv2d that convolves with its standardized weight; parameters and state dict as nn.Conv2d's."""

    def __init__(self, *args: Any, ws_eps: float = DEFAULT_WS_EPS, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.ws_eps = ws_eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, standardize_weight(self.weight, self.ws_eps), self.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, ws_eps: float = DEFAULT_WS_EPS) -> WSConv2d:
        """A WSConv2d with `conv`'s configuration and (raw) weights."""
        ws = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                 dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                 padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype, ws_eps=ws_eps)
        ws.load_state_dict(conv.state_dict())
        return ws

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ws_eps={self.ws_eps}"


def weight_standardize(conv: nn.Conv2d, options: dict[str, Any]) -> nn.Module:
    """The `conv_transform` of `gn_ws`: `conv` as a WSConv2d (options: the norm's, for `ws_eps`)."""
    return WSConv2d.from_conv(conv, options.get("ws_eps", DEFAULT_WS_EPS))


@register_norm("gn_ws", aliases=("gnws", "group_norm_ws"), check=check_group_options("gn_ws"),
               conv_transform=weight_standardize)
def group_norm_ws(
    num_channels: int,
    groups: int | None = None,
    channels_per_group: int | None = None,
    eps: float = 1e-5,
    affine: bool = True,
    ws_eps: float = DEFAULT_WS_EPS,
) -> nn.Module:
    """GroupNorm (as `gn`) whose model's convolutions are weight-standardized (applied by build_model)."""
    return nn.GroupNorm(resolve_groups("gn_ws", num_channels, groups, channels_per_group), num_channels, eps=eps,
                        affine=affine)
