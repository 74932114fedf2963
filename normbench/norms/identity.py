"""The no-normalization baseline."""

from torch import nn

from normbench.norms.registry import register_norm


@register_norm("none", aliases=("identity",))
def no_norm(num_channels: int) -> nn.Module:
    """Identity: the baseline without normalization."""
    return nn.Identity()
