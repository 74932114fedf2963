"""`python -m normbench <command> [overrides]`: parse the command, compose the config, dispatch.

Every user error (bad override, unknown name, missing dataset...) prints one line `error: ...` on
stderr and exits with code 2 before any work starts. A fault during work (a full disk, a corrupt study
database, a storage outage longer than the sweep's patience) prints one `error: ...` line naming the
cause and the file, and exits with code 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from normbench.errors import ConfigError
from normbench.faults import as_fault

USAGE = """usage: python -m normbench <command> [key=value ...]

commands:
{commands}

Overrides use Hydra syntax: group choices (norm=gn, model=resnet20, data=synthetic) and dotted keys
(norm.momentum=0.01, data.batch_size=32, trainer.max_epochs=2, seed=1, out_dir=runs/x).
`run sweep=NAME` runs the sweep configs/sweep/NAME.yaml (or sweep=PATH.yaml); `sweep.<key>=...` changes its
settings (sweep.n_workers=4, sweep.storage=postgresql://..., sweep.max_trials=5, sweep.study_name=NAME).
`run -m norm=bn,gn data.batch_size=8,32` (or --multirun) runs every combination as a grid study (resumable).
`hydra.searchpath=[file:///DIR]` adds a user config directory (DIR/norm/my_norm.yaml: norm=my_norm).
`norm=my_pkg.layers:MyNorm` (model=pkg.mod:build, data=pkg.mod:load) uses one from outside the package, by import
path; an installed package's entry points (groups normbench.norms, normbench.models, normbench.datasets) by name.
`python -m normbench list` shows the available models, norms, datasets, sweeps and experiments."""

COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {}


def command(name: str, help: str):
    """Registers a subcommand handler `fn(args) -> exit code`."""

    def deco(fn: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
        COMMANDS[name] = (fn, help)
        return fn

    return deco


CONFIG_GROUPS = ("model", "norm", "data", "optim", "trainer", "logger", "calib", "sweep", "experiment")


def usage() -> str:
    from normbench.paths import group_choices

    width = max(len(n) for n in COMMANDS)
    lines = [f"  {name.ljust(width)}  {help}" for name, (_, help) in COMMANDS.items()]
    groups = [f"  {g.ljust(10)}  {', '.join(group_choices(g)) or '(none)'}" for g in CONFIG_GROUPS]
    return (USAGE.format(commands="\n".join(lines)) + "\n\nconfig groups (group=choice):\n" + "\n".join(groups)
            + "\n\noptions: --version; run --cfg job prints the composed run config and exits")


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from normbench.version import __version__

    parts = [f"normbench {__version__}"]
    for dep in ("torch", "lightning", "optuna"):
        try:
            parts.append(f"{dep} {version(dep)}")
        except PackageNotFoundError:
            parts.append(f"{dep} not installed")
    return parts[0] + " (" + ", ".join(parts[1:]) + ")"


def take_cfg_flag(args: list[str]) -> tuple[str | None, list[str]]:
    """(`--cfg` value or None, the other arguments); `--cfg job`, `--cfg=job` and `-c job` are accepted."""
    rest, value, i = [], None, 0
    while i < len(args):
        a = args[i]
        if a in ("--cfg", "-c"):
            if i + 1 >= len(args):
                raise ConfigError(f"{a} needs a value; accepted: job, all")
            value, i = args[i + 1], i + 2
            continue
        if a.startswith("--cfg="):
            value = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    if value is not None and value not in ("job", "all"):
        raise ConfigError(f"--cfg {value} is not supported; accepted: job, all (normbench has no hydra section)")
    return value, rest


@command("run", "train one run (default: the d2l LeNet+BN recipe on Fashion-MNIST) and write summary.json; "
                "with sweep=NAME run (or resume) the Optuna sweep configs/sweep/NAME.yaml; with -m a grid study "
                "of the value lists (norm=bn,gn)")
def cmd_run(args: list[str]) -> int:
    from normbench.resources import check_count, take_override
    from normbench.sweep.multirun import take_flag

    multirun, args = take_flag(args)
    show_cfg, args = take_cfg_flag(args)
    allow_oversubscribe, args = take_override(args)
    if multirun:
        if show_cfg is not None:
            raise ConfigError("--cfg prints one run's config; drop -m/--multirun")
        from normbench.sweep import run_sweep

        return run_sweep(args, multirun=True, allow_oversubscribe=allow_oversubscribe)
    if show_cfg is not None:
        if any(a.split("=", 1)[0] == "sweep" or a.startswith("sweep.") for a in args):
            raise ConfigError("--cfg prints one run's config; drop sweep=... and sweep.* from the command")
        from omegaconf import OmegaConf

        from normbench.config import load_config

        print(OmegaConf.to_yaml(load_config(args)), end="")
        return 0
    if any(a.split("=", 1)[0] == "sweep" or a.startswith("sweep.") for a in args):
        from normbench.sweep import run_sweep

        return run_sweep(args, allow_oversubscribe=allow_oversubscribe)
    from normbench.config import load_config

    cfg = load_config(args)
    check_count("trainer.threads", cfg.trainer.threads, allow_oversubscribe)
    from normbench.report.console import print_summary
    from normbench.train import train

    result = train(cfg)
    if result.is_global_zero:
        print_summary(result.summary)
    return 0 if result.summary.get("status") == "ok" else 1


@command("list", "list the registered models, norms, datasets, sweeps and experiments")
def cmd_list(args: list[str]) -> int:
    if args:
        raise ConfigError(f"'list' takes no arguments, got: {' '.join(args)}")
    from normbench.config import group_choices
    from normbench.data import DATASETS
    from normbench.models import MODELS
    from normbench.norms import NORMS

    for kind, registry in (("models", MODELS), ("norms", NORMS), ("datasets", DATASETS)):
        # built-in entries by name; a plugin (an installed entry point) with where it comes from
        shown = [name if origin == "built-in" else f"{name} ({origin})" for name, origin in registry.origins().items()]
        print(f"{kind}: {', '.join(shown)}")
    for kind, names in (("sweeps", group_choices("sweep")), ("experiments", group_choices("experiment"))):
        print(f"{kind}: {', '.join(names) if names else '(none)'}")
    print("plugins by import path: norm=package.module:Class, model=package.module:build, data=package.module:load")
    return 0


@command("table", "write <results_dir>/<sweep>/table.md and table.tex from a stored sweep (never re-trains)")
def cmd_table(args: list[str]) -> int:
    from normbench.report.metrics import check_metric_keys
    from normbench.report.option_checks import TABLE_CHECKS, check_options
    from normbench.report.study import load_results, parse_report_args
    from normbench.report.tables import TABLE_OPTIONS, table_columns, write_tables

    ref = parse_report_args(args, "table", "table", TABLE_OPTIONS)
    check_options(ref.options, TABLE_CHECKS, "table")
    columns, _ = table_columns(ref.options)  # a bad column spec fails before the study is read
    check_metric_keys([c.key for c in columns], "table.columns")
    for path in write_tables(load_results(ref), ref.options, ref.out_dir):
        print(f"wrote {path}")
    return 0


@command("plot", "write PNG/PDF figures under <results_dir>/<sweep>/figures/ from a stored sweep")
def cmd_plot(args: list[str]) -> int:
    from normbench.report.figures import REPORT_OPTIONS, write_figures
    from normbench.report.option_checks import REPORT_CHECKS, check_options
    from normbench.report.study import load_results, parse_report_args

    ref = parse_report_args(args, "plot", "report", REPORT_OPTIONS)
    check_options(ref.options, REPORT_CHECKS, "report")
    paths, skipped = write_figures(load_results(ref), ref.options, ref.out_dir / "figures")
    for path in paths:
        print(f"wrote {path}")
    for fig in skipped:
        print(f"skipped {fig.name}: {fig.skipped}")
    return 0


@command("dashboard", "create/update the sweep's W&B report (offline: <results_dir>/<sweep>/dashboard.html)")
def cmd_dashboard(args: list[str]) -> int:
    from normbench.report.dashboard import publish
    from normbench.report.figures import REPORT_OPTIONS
    from normbench.report.option_checks import REPORT_CHECKS, check_options
    from normbench.report.study import load_results, parse_report_args

    ref = parse_report_args(args, "dashboard", "report", REPORT_OPTIONS)
    check_options(ref.options, REPORT_CHECKS, "report")
    print(publish(load_results(ref), ref))
    return 0


@command("reproduce", "run a study of experiments/ and write results/<study>/; --check regenerates the committed "
                      "results from their records (no training); --list shows the studies and their cost; --add "
                      "norm=... runs a new norm under the study's protocol beside its baselines")
def cmd_reproduce(args: list[str]) -> int:
    if "--add" in args:  # a new norm through a committed study (normbench.experiments.add)
        from normbench.experiments.add import main as add

        return add(args)
    from normbench.experiments.reproduce import main as reproduce

    return reproduce(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("--version", "-V", "version"):
        print(version_text())
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
    except Exception as e:  # a fault during work (disk full, corrupt database...): one line; anything else raises
        fault = as_fault(e)
        if fault is None:
            raise
        print(f"error: {fault}", file=sys.stderr)
        return 1
