"""The norm registry; each family module registers its factories here."""

from normbench.registry import Registry

NORMS = Registry("norm")


def register_norm(name: str, *, aliases: tuple[str, ...] = (), batch_stats: bool = False, **meta):
    """Registers a `(num_channels, **options) -> nn.Module` factory under `name`.

    Args:
        batch_stats: True when the layer normalizes with statistics taken over the batch, so a
            batch of one sample is meaningless for it.
    """
    return NORMS.register(name, aliases=aliases, batch_stats=batch_stats, **meta)
