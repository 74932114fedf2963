"""The model registry and the placeholder that marks a normalization site."""

from torch import nn

from normbench.registry import Registry

# Builders are called as fn(norm, num_classes, in_channels, image_size, **options).
MODELS = Registry("model", skip_params=4)


def register_model(name: str, *, aliases: tuple[str, ...] = (), **meta):
    return MODELS.register(name, aliases=aliases, **meta)


class NormSlot(nn.Module):
    """Stands where a norm goes until build_model replaces it; records the channel count."""

    def __init__(self, num_channels: int):
        super().__init__()
        self.num_channels = int(num_channels)

    def forward(self, x):  # pragma: no cover - replaced before any forward
        raise RuntimeError("NormSlot was not replaced by a norm")
