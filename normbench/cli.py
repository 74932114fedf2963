"""`python -m normbench <command> [overrides]`: parse the command, compose the config, dispatch.

Every user error (bad override, unknown name, missing dataset...) prints one line `error: ...` on
stderr and exits with code 2 before any work starts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from normbench.errors import ConfigError

USAGE = """usage: python -m normbench <command> [key=value ...]

commands:
{commands}

Overrides use Hydra syntax: group choices (norm=gn, model=resnet20, data=synthetic) and dotted keys
(norm.momentum=0.01, data.batch_size=32, trainer.max_epochs=2, seed=1, out_dir=runs/x).
`run sweep=NAME` runs the sweep configs/sweep/NAME.yaml; `sweep.<key>=...` changes its settings
(sweep.n_workers=4, sweep.storage=postgresql://..., sweep.pruner=median, sweep.max_trials=5).
`python -m normbench list` shows the available models, norms, datasets, sweeps and experiments."""

COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {}


def command(name: str, help: str):
    """Registers a subcommand handler `fn(args) -> exit code`."""

    def deco(fn: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
        COMMANDS[name] = (fn, help)
        return fn

    return deco


def usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [f"  {name.ljust(width)}  {help}" for name, (_, help) in COMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


@command("run", "train one run (default: the d2l LeNet+BN recipe on Fashion-MNIST) and write summary.json; "
                "with sweep=NAME run (or resume) the Optuna sweep configs/sweep/NAME.yaml")
def cmd_run(args: list[str]) -> int:
    if any(a.split("=", 1)[0] == "sweep" or a.startswith("sweep.") for a in args):
        from normbench.sweep import run_sweep

        return run_sweep(args)
    from normbench.config import load_config

    cfg = load_config(args)
    from normbench.report.console import print_summary
    from normbench.train import train

    result = train(cfg)
    print_summary(result.summary)
    return 0 if result.summary.get("status") == "ok" else 1


@command("list", "list the registered models, norms, datasets, sweeps and experiments")
def cmd_list(args: list[str]) -> int:
    if args:
        raise ConfigError(f"'list' takes no arguments, got: {' '.join(args)}")
    from normbench import data, models, norms
    from normbench.config import group_choices

    rows = {
        "models": models.available(),
        "norms": norms.available(),
        "datasets": data.available(),
        "sweeps": group_choices("sweep"),
        "experiments": group_choices("experiment"),
    }
    for kind, names in rows.items():
        print(f"{kind}: {', '.join(names) if names else '(none)'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, args = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command '{name}'; accepted: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if any(a in ("-h", "--help") for a in args):
        print(usage())
        return 0
    try:
        return COMMANDS[name][0](args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
