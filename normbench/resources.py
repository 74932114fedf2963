"""CPU resources a command may ask for: worker processes and torch threads, bounded by the machine's cores.

A sweep with `sweep.n_workers=1000` or a run with `trainer.threads=1000` would start that many processes or
threads and spend the machine on switching between them. Both are refused (ConfigError, exit code 2, before
any work) above OVERSUBSCRIBE_PER_CORE per CPU core this process may use, unless the command line says
`allow_oversubscribe=true` (a command-line switch, not part of the run config: it changes no number a run
computes, so no record or resume check sees it).

Independently of that limit, a sweep starts no more worker processes than it has trials that can still run
(`workers_to_start`): a worker beyond those would only start, find nothing to do and exit.
"""

from __future__ import annotations

import os

from normbench.errors import ConfigError

OVERSUBSCRIBE_PER_CORE = 4  # workers (or threads) per core above which a count is taken for a mistake
OVERRIDE_KEY = "allow_oversubscribe"


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def take_override(args: list[str]) -> tuple[bool, list[str]]:
    """(`allow_oversubscribe=true` given, the other arguments).

    Raises:
        ConfigError: a value other than true or false.
    """
    allow, rest = False, []
    for arg in args:
        key, sep, value = arg.partition("=")
        if key.lstrip("+") != OVERRIDE_KEY or not sep:
            rest.append(arg)
            continue
        if value.lower() not in ("true", "false"):
            raise ConfigError(f"{OVERRIDE_KEY} must be true or false, got {value!r}")
        allow = value.lower() == "true"
    return allow, rest


def check_count(key: str, value: int | None, allow: bool = False, cores: int | None = None) -> None:
    """Refuses a process or thread count far above the cores.

    Args:
        key: the option that set it, for the message (e.g. `sweep.n_workers`).
        value: the count (None: the default, never refused).
        allow: `allow_oversubscribe=true` was given.
        cores: the cores to compare with (default: `cpu_cores()`).

    Raises:
        ConfigError: `value` exceeds OVERSUBSCRIBE_PER_CORE per core and `allow` is false.
    """
    if value is None or allow:
        return
    n = cores or cpu_cores()
    limit = OVERSUBSCRIBE_PER_CORE * n
    if value > limit:
        raise ConfigError(f"{key}={value} is more than {OVERSUBSCRIBE_PER_CORE} per CPU core ({n} core(s) here: at "
                          f"most {limit}); lower it, or add {OVERRIDE_KEY}=true to run it anyway")


def workers_to_start(n_workers: int, can_run: int, max_trials: int | None = None) -> int:
    """The worker processes worth starting: at most one per trial that can still run (and `max_trials`), at
    least one (it finds the sweep finished, or waits for trials running elsewhere)."""
    bound = can_run if max_trials is None else min(can_run, max_trials)
    return max(1, min(n_workers, bound))
