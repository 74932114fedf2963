"""Filter Response Normalization with a Thresholded Linear Unit (Singh & Krishnan 2019).

Per sample and channel, with nu^2 the mean of x^2 over the spatial positions (no mean subtraction):

    y = gamma * x / sqrt(nu^2 + eps) + beta        z = max(y, tau)   (TLU, learned tau per channel)

FRN replaces both the norm and the activation in the paper: the entry declares `replaces_activation`, so
a model built with `norm_act=paper` (the ResNets' default) puts no activation after it. With
`norm_act=always` (LeNet's default, the committed studies' setting) a site computes act(max(y, tau)): for
ReLU that is max(y, tau, 0), the TLU itself whenever tau >= 0 (its initial value). `tlu=false` drops the
threshold.

On (N, C) inputs (fully connected layers) each value is its own "filter response", so nu^2 = x^2 and
x / sqrt(x^2 + eps) is close to sign(x): the paper finds a learned eps crucial there. With
`learnable_eps=true` every channel learns its eps (|eps_c|, initialized to `eps`).
"""

from __future__ import annotations

import torch
from torch import nn

from normbench.norms.registry import register_norm


class FilterResponseNorm(nn.Module):
    """FRN + TLU over (N, C, ...) inputs (module docstring)."""

    def __init__(self, num_features: int, eps: float = 1e-6, learnable_eps: bool = False, tlu: bool = True):
        super().__init__()
        self.num_features, self.eps, self.learnable_eps, self.tlu = num_features, eps, learnable_eps, tlu
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.tau = nn.Parameter(torch.zeros(num_features)) if tlu else None
        self.eps_param = nn.Parameter(torch.full((num_features,), float(eps))) if learnable_eps else None

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        if self.tau is not None:
            nn.init.zeros_(self.tau)
        if self.eps_param is not None:
            nn.init.constant_(self.eps_param, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"FilterResponseNorm expects an (N, C, ...) input, got {x.dim()}D")
        shape = [1, -1] + [1] * (x.dim() - 2)
        nu2 = x.square().mean(dim=tuple(range(2, x.dim())), keepdim=True) if x.dim() > 2 else x.square()
        eps = self.eps_param.abs().reshape(shape) if self.eps_param is not None else self.eps
        y = torch.addcmul(self.bias.reshape(shape), x * torch.rsqrt(nu2 + eps), self.weight.reshape(shape))
        if self.tau is not None:
            y = torch.maximum(y, self.tau.reshape(shape))
        return y

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, learnable_eps={self.learnable_eps}, tlu={self.tlu}"


@register_norm("frn", aliases=("filter_response_norm", "filterresponsenorm"), replaces_activation=True)
def filter_response_norm(num_channels: int, eps: float = 1e-6, learnable_eps: bool = False,
                         tlu: bool = True) -> nn.Module:
    """Filter Response Normalization with its TLU activation (Singh & Krishnan 2019)."""
    return FilterResponseNorm(num_channels, eps=eps, learnable_eps=learnable_eps, tlu=tlu)
