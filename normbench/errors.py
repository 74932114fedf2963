"""User-facing errors: each carries one line that names the problem and the accepted values."""


class ConfigError(ValueError):
    """A bad config value, name or override, raised before any work starts (CLI exit code 2)."""


class RunFault(RuntimeError):
    """A fault during work (storage outage, disk full, corrupt file): one line naming the cause and the file
    (CLI exit code 1). Whatever was stored before the fault is intact; the message says how to go on."""
