"""results/<study>/README.md, generated from the declaration, the records and a hand-written finding.

The finding (results/<study>/finding.md) is the one part written by a person after the runs: two or three
sentences on what the study found. Its numbers are placeholders filled from the claims' statistics, so the
text cannot drift from the data: `{{claim_id.detail}}`, `{{claim_id.verdict}}`, and
`{{claim_id.value}}`, `.low`, `.high`, `.n`, `.p_value` and `.p_holm` (the raw and Holm-adjusted p; append
`:pp` to show a fraction in percentage points, e.g. `{{bn_degrades_at_b2.value:pp}}`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from normbench.errors import ConfigError
from normbench.experiments.familywise import format_p

FINDING_FILE = "finding.md"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w]*)\.(detail|verdict|value|low|high|n|p_value|p_holm)"
                          r"(?::(pp|pct|int|g))?\s*\}\}")


def fill_finding(text: str, claims: list[Any], study: str) -> str:
    """The finding with every `{{claim.field[:fmt]}}` replaced by the claim's statistic."""
    by_id = {c.id: c for c in claims}

    def sub(m: re.Match) -> str:
        cid, field, fmt = m.group(1), m.group(2), m.group(3)
        if cid not in by_id:
            raise ConfigError(f"study {study}: {FINDING_FILE} names claim '{cid}', which is not declared; "
                              f"claims: {', '.join(by_id)}")
        c = by_id[cid]
        if field in ("detail", "verdict"):
            return str(getattr(c, field))
        v = getattr(c, field)
        if v is None:
            return "n/a"
        if fmt == "pp":
            return f"{v * 100:+.1f}" if field == "value" else f"{v * 100:.1f}"
        if fmt == "pct":
            return f"{v * 100:.1f}"
        if fmt == "int":
            return f"{int(round(v))}"
        return f"{v:.3g}"

    out = _PLACEHOLDER.sub(sub, text)
    if "{{" in out:
        bad = out[out.index("{{"):][:40]
        raise ConfigError(f"study {study}: {FINDING_FILE} has a placeholder that is not claim.field[:pp|pct|int|g]: "
                          f"{bad!r}")
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(exp: Any, finding: str | None, claims: list[Any], tables: list[tuple[dict, str]],
           figures: list[tuple[dict, Any]], prov: dict[str, Any], replicated: str | None = None) -> str:
    """The README; `replicated`: the "replicated on" line (normbench.experiments.replay.replications_line)."""
    name = exp.name
    out = [f"# {exp.title}", "", f"**Question.** {exp.question}", "", "## Finding", ""]
    out.append(fill_finding(finding, claims, name).strip() if finding else
               "_Not written yet: the finding is added to finding.md once the study is complete._")
    out += ["", "## Claims", "", claims_summary(exp, claims), "",
            "| claim | statement | pre-declared test | result | p (raw) | p (Holm) | verdict |",
            "| :--- | :--- | :--- | :--- | ---: | ---: | :--- |"]
    for c in claims:
        statement = c.statement + (f" _Confounded contrast, declared: {c.confounded}_" if c.confounded else "")
        if c.evidence == "test":
            ps = f"{format_p(c.p_value)} | {format_p(c.p_holm)}"
            test = f"{c.test}; p: {c.p_method}"
        else:
            ps, test = "descriptive (no test) | —", c.test
        out.append(f"| `{c.id}` | {_cell(statement)} | {_cell(test)} | {_cell(c.detail)} | {ps} | **{c.verdict}** |")
    out += ["", "## Tables"]
    for entry, md in tables:
        out += ["", f"**{entry['name']}.** {_cell(str(entry.get('caption') or ''))} "
                    f"([LaTeX]({entry['name']}.tex))", "", md.rstrip()]
    if figures:
        out += ["", "## Figures"]
        for entry, fig in figures:
            if fig.fig is None:
                out += ["", f"**{entry['name']}**: not drawn ({fig.skipped})."]
                continue
            out += ["", f"![{entry['name']}](figures/{entry['name']}.png)", "",
                    f"**{entry['name']}.** {entry['caption'].strip()} ([PDF](figures/{entry['name']}.pdf), "
                    f"[data](figures/{entry['name']}.json))"]
    out += ["", "## Protocol", "", exp.protocol.strip(), ""]
    for part, spec in exp.parts.items():
        grid = " × ".join(f"{d.label} ({len(d.values)})" for d in spec.grid)
        info = prov["parts"].get(part, {})
        outcomes = ", ".join(f"{v} {k}" for k, v in info.get("outcomes", {}).items())
        out.append(f"- part `{part}`: {spec.description or ''}. Grid {grid} × {len(spec.seeds)} seeds = "
                   f"{info.get('trials', 0)} trials ({outcomes}).")
    out += ["", "## Provenance", ""]
    code = ", ".join(f"`{c['git_sha'][:10] if c.get('git_sha') else 'unknown'}`"
                     f"{' (uncommitted changes)' if c.get('git_dirty') else ''}" for c in prov["code"])
    out.append(f"- code: {code}")
    if prov.get("numerics"):
        out.append(f"- numerics fingerprint: {', '.join(f'`{f}`' for f in prov['numerics'])} (normbench.numerics)")
    for v in prov["versions"]:
        out.append(f"- versions: python {v.get('python')}, torch {v.get('torch')}, lightning {v.get('lightning')}, "
                   f"numpy {v.get('numpy')}, normbench {v.get('normbench')}")
    paths = prov.get("compute_paths") or []
    if paths:
        from normbench.training.fast_path import describe

        shown = "; ".join(f"{describe({**p, 'compile': p['compiled']})} ({p['runs']} runs)" for p in paths)
        out.append(f"- compute path: {shown} (normbench.training.fast_path)")
    for m in prov["machine"]:
        out.append(f"- machine: {m.get('cpu_model')} ({m.get('cpu_count')} logical cores), {m.get('accelerator')}"
                   f"{'' if m.get('device') in (None, 'cpu') else ' ' + str(m.get('device'))}, "
                   f"{m.get('threads')} thread(s) per run")
    if replicated:
        out.append(replicated)
    t = prov["time"]
    w = t["trial_wall_s"]
    out.append(f"- time: {w['n']} runs, {w['total'] / 3600:.2f} h of run wall time (median {w['median']} s per run), "
               f"{t['cpu_hours']} CPU-hours; first start {t['first_start']}, last completion {t['last_complete']}")
    out += ["- the full record: [provenance.json](provenance.json); every trial: [records/](records/)", "",
            "## Reproduce", "", "```bash",
            f"python -m normbench reproduce {name} --check            # regenerate all of this from records/ "
            "(no training)",
            f"python -m normbench reproduce {name} sweep.n_workers=2   # re-run the trials (resumable)",
            "```", ""]
    return "\n".join(out)


def claims_summary(exp: Any, claims: list[Any]) -> str:
    """The README's rule and count: Holm over the m tested claims; descriptive claims apart."""
    from normbench.experiments.familywise import DEFAULT_ALPHA, family_size

    alpha = float(getattr(exp, "alpha", None) or DEFAULT_ALPHA)
    tested = [c for c in claims if c.evidence == "test"]
    described = [c for c in claims if c.evidence != "test"]
    held = sum(c.held is True for c in tested)
    text = (f"Declared on {exp.declared} in [experiments/{exp.name}.yaml](../../experiments/{exp.name}.yaml), "
            f"before any run, and tested exactly as declared, with the family-wise error controlled by Holm over "
            f"the m = {family_size(claims)} tested claims at alpha = {alpha:g}: a tested claim holds when its "
            f"pre-declared test passes and its Holm-adjusted p is <= {alpha:g}. {held} of {len(tested)} tested "
            "claims held.")
    if described:
        seen = sum(c.held is True for c in described)
        text += (f" {len(described)} claim{'s are' if len(described) > 1 else ' is'} descriptive (no test: "
                 f"ranges or minima of means, counts), shown but not counted as evidence: {seen} of "
                 f"{len(described)} observed as stated.")
    return text


def read_finding(folder: Path) -> str | None:
    path = folder / FINDING_FILE
    return path.read_text() if path.is_file() else None
