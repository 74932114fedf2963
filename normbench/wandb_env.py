"""Whether W&B can go online, decided without importing wandb (or torch): shared by logging and dashboards."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse


def has_api_key() -> bool:
    """Whether a W&B API key is configured: WANDB_API_KEY, or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False
