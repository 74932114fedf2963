"""The numerics fingerprint: which code path and kernels produced a run's numbers.

A run's numbers are a function of its config, its seed, the CPU (which kernels torch picks and how they
round) and the numerics-relevant code: normbench's own training path and torch. `fingerprint()` names that
code as one short string, recorded in every run record (`numerics`) and in each study's provenance.json:

    n1/torch-2.14.1+cu130/AVX512/det

- `n1`: `NUMERICS_VERSION`, a declared version of normbench's numerics-relevant code path (models, norms,
  data order, optimizer, measurements). A developer whose change moves any recorded number (a replay of a
  committed trial on the CPU model that recorded it is no longer bit-identical: `reproduce STUDY --replay`)
  bumps it deliberately, and the affected studies are re-run or their README says which numbers came from
  which code.
- `torch-...`: the torch version (its kernels are part of the path).
- `AVX512`: torch's CPU capability (`torch.backends.cpu.get_cpu_capability()`): the vectorized kernels torch
  dispatches to on this CPU (ATEN_CPU_CAPABILITY can lower it).
- `det` / `nondet`: deterministic algorithms on (`trainer.deterministic`) or off.

Records made before this field existed are fingerprint version 1 by definition (`n1`): they were produced by
the code path that version 1 names. Their torch version comes from the record's `versions` (or the study's
provenance `versions`), their determinism from their config; their CPU capability was not recorded and reads
`?`. An unknown component matches any value (`same_numerics`): for one torch build the capability is a
function of the CPU model, which a replay compares on its own.

Plain Python apart from `fingerprint()` (which imports torch): the report commands read records with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NUMERICS_VERSION = 1

UNKNOWN = "?"
COMPONENTS = ("version", "torch", "cpu_capability", "deterministic")


def make_fingerprint(version: int, torch_version: str | None, cpu_capability: str | None,
                     deterministic: Any) -> str:
    """The fingerprint string of its components (None: unknown, written `?`)."""
    det = UNKNOWN if deterministic is None else ("det" if str(deterministic).lower() == "true" else "nondet")
    return "/".join([f"n{version}", f"torch-{torch_version or UNKNOWN}", cpu_capability or UNKNOWN, det])


def fingerprint(deterministic: Any) -> str:
    """This process's fingerprint for a run with `trainer.deterministic` = `deterministic`."""
    import torch

    return make_fingerprint(NUMERICS_VERSION, torch.__version__, torch.backends.cpu.get_cpu_capability(),
                            deterministic)


def parse(text: str) -> dict[str, str]:
    """The components of a fingerprint string: {version, torch, cpu_capability, deterministic}.

    Raises:
        ValueError: the text is not a fingerprint.
    """
    parts = str(text).split("/")
    if len(parts) != 4 or not parts[0].startswith("n") or not parts[1].startswith("torch-"):
        raise ValueError(f"not a numerics fingerprint: {text!r} (expected n<version>/torch-<version>/<cpu>/<det>)")
    return dict(zip(COMPONENTS, (parts[0][1:], parts[1][len("torch-"):], parts[2], parts[3]), strict=True))


def record_fingerprint(summary: Mapping[str, Any], versions: Mapping[str, Any] | None = None) -> str:
    """The fingerprint of a stored run record: its `numerics` field, else version 1 by definition.

    Args:
        summary: the run record (summary.json).
        versions: the study's provenance `versions` entry to fall back on when the record has none.
    """
    stored = summary.get("numerics")
    if isinstance(stored, str) and stored:
        return stored
    torch_version = ((summary.get("versions") or {}).get("torch") or (versions or {}).get("torch"))
    det = summary.get("deterministic")
    if det is None:
        det = ((summary.get("config") or {}).get("trainer") or {}).get("deterministic")
    return make_fingerprint(1, torch_version, None, det)


def same_numerics(a: str, b: str) -> bool:
    """Whether two fingerprints name the same code path (a `?` component matches anything)."""
    pa, pb = parse(a), parse(b)
    return all(pa[k] == pb[k] or UNKNOWN in (pa[k], pb[k]) for k in COMPONENTS)


def differences(a: str, b: str) -> list[str]:
    """The components two fingerprints differ in, as 'name: a -> b' (unknown components never differ)."""
    pa, pb = parse(a), parse(b)
    return [f"{k}: {pa[k]} -> {pb[k]}" for k in COMPONENTS if pa[k] != pb[k] and UNKNOWN not in (pa[k], pb[k])]
