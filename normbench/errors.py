"""User-facing errors: each carries one line that names the problem and the accepted values."""


class ConfigError(ValueError):
    """A bad config value, name or override, raised before any work starts (CLI exit code 2)."""
