"""Table renderers: GitHub-flavoured Markdown and a booktabs LaTeX float sized for a two-column paper."""

from __future__ import annotations

from normbench.report.stats import WELCH
from normbench.report.table_model import Cell, Table


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _n_text(cell: Cell) -> str:
    if cell.n is None or not cell.show_n:
        return ""
    return f" ({cell.n} vs {cell.n_baseline})" if cell.method == WELCH else f" ({cell.n})"


def _md_cell(cell: Cell) -> str:
    if cell.kind == "empty":
        return "–"
    if cell.kind == "text":
        return _md_escape(cell.text)
    if cell.kind == "stat":
        body = cell.mean if cell.std is None else f"{cell.mean} ± {cell.std}"
        return f"{f'**{body}**' if cell.bold else body}{_n_text(cell)}"
    return delta_text(cell, cell.mean, cell.low, cell.high, "†")


def delta_text(cell: Cell, mean: str, low: str | None, high: str | None, mark: str, pm: str = " ± ") -> str:
    """A Δ cell as text (numbers already in the format's notation): `mean ± half†`, else `mean [low, high]†`,
    then `(n)` or `(n vs m)` (Welch) where not every seed entered."""
    if cell.halfwidth is not None:
        ci = f"{pm}{cell.halfwidth}"
    else:
        ci = f" [{low}, {high}]" if low is not None else " [no CI]"
    return f"{mean}{ci}{mark if cell.significant else ''}{_n_text(cell)}"


def render_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table with the footer as an italic paragraph."""
    sep = {"l": ":---", "r": "---:"}
    lines = ["| " + " | ".join(_md_escape(h) for h in table.headers) + " |",
             "| " + " | ".join(sep[a] for a in table.align) + " |"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    for line in table.footer:
        lines += ["", f"_{_md_escape(line)}_"]
    return "\n".join(lines) + "\n"


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "±": r"$\pm$", "×": r"$\times$", "Δ": r"$\Delta$", "–": "--", "·": r"$\cdot$",
                "†": r"$^\dagger$", "−": r"$-$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)


def _tex_num(text: str) -> str:
    # A text-mode hyphen is too short for a minus sign; numbers are typeset with a math minus.
    return ("$-$" + text[1:]) if text.startswith("-") else ("$+$" + text[1:]) if text.startswith("+") else text


def _tex_bold(text: str) -> str:
    return "\\textbf{" + text + "}"


def _tex_cell(cell: Cell, stacked: bool = False) -> str:
    """A cell's LaTeX; `stacked`: `mean` over `± spread` in two lines (a table too wide for the page)."""
    if cell.kind == "empty":
        return "--"
    if cell.kind == "text":
        return tex_escape(cell.text)
    if cell.kind == "stat":
        mean = _tex_num(cell.mean)
        if cell.std is None:
            lines = [mean]
        elif stacked:
            lines = [mean, f"$\\pm$ {cell.std}"]
        else:
            lines = [f"{mean} $\\pm$ {cell.std}"]
        if cell.bold:
            lines = [_tex_bold(x) for x in lines]
        lines[-1] += _n_text(cell)
        return _tex_stack(lines)
    text = delta_text(cell, _tex_num(cell.mean), None if cell.low is None else _tex_num(cell.low),
                      None if cell.high is None else _tex_num(cell.high), "$^\\dagger$",
                      "\n$\\pm$ " if stacked else " $\\pm$ ")
    return _tex_stack(text.split("\n"))


def _tex_stack(lines: list[str]) -> str:
    return lines[0] if len(lines) == 1 else "\\begin{tabular}[t]{@{}r@{}}" + " \\\\ ".join(lines) + "\\end{tabular}"


# Widths of a standard two-column `article` (10pt, letter): what a paper's table has to fit.
COLUMN_WIDTH_PT = 229.0
TEXT_WIDTH_PT = 469.0
_CHAR_PT = 4.1  # an average \footnotesize character of the table's text (measured: 3.5-4.3pt)
_COLSEP_PT = 8.0  # 2 x \tabcolsep of 4pt
STACK_ABOVE = 1.1  # estimated width / text width above which numbers are stacked (the estimate runs high)


def _plain(cell: Cell) -> str:
    return _md_cell(cell).replace("**", "")


def _header_lines(header: str, width: int) -> list[str]:
    """A header broken at spaces into lines no wider than its column's cells (at least 8 characters)."""
    limit = max(width, 8)
    lines: list[str] = []
    for word in header.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= limit:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def latex_layout(table: Table, stacked: bool = False) -> tuple[list[list[str]], float]:
    """Each header's lines and the table's estimated natural width in points (\\footnotesize).

    `stacked`: numeric cells as `mean` over `± spread` (the wider of the two lines counts).
    """
    def width(cell: Cell) -> int:
        text = _plain(cell)
        if stacked and cell.kind in ("stat", "delta"):
            return max(len(part) + 2 for part in text.split(" ± "))
        return len(text)

    widths = [max([width(row[i]) for row in table.rows] or [0]) for i in range(len(table.headers))]
    headers = [_header_lines(h, w) for h, w in zip(table.headers, widths, strict=True)]
    total = sum((max(w, *(len(x) for x in h)) * _CHAR_PT + _COLSEP_PT) for w, h in zip(widths, headers, strict=True))
    return headers, total


def _tex_header(lines: list[str], align: str) -> str:
    if len(lines) == 1:
        return tex_escape(lines[0])
    body = " \\\\ ".join(tex_escape(x) for x in lines)
    return f"\\begin{{tabular}}[b]{{@{{}}{align}@{{}}}}{body}\\end{{tabular}}"


def render_latex(table: Table, label: str | None = None) -> str:
    """A booktabs table float that fits a two-column paper (needs `\\usepackage{booktabs}`).

    Long headers are broken over lines; the float is `table` (\\columnwidth) when the estimated width
    fits a column, else `table*` (\\textwidth); a table estimated wider than the text puts each number's
    spread under its mean (two-line cells). A tabular still wider than the line (many columns) is
    scaled down to it, and says so on the terminal ("normbench: table scaled"). The footer is a paragraph
    under the rule. A test compiles every committed table with pdflatex: no overfull box, no scaling.
    """
    headers, width = latex_layout(table)
    # Too wide for the page even as table*: numbers go on two lines (mean over ± spread).
    stacked = width > STACK_ABOVE * TEXT_WIDTH_PT
    if stacked:
        headers, width = latex_layout(table, stacked=True)
    env = "table" if width <= 0.97 * COLUMN_WIDTH_PT else "table*"
    lines = [
        "% Generated by normbench from stored results; do not edit by hand.",
        "% Needs \\usepackage{booktabs,graphicx}.",
        f"\\begin{{{env}}}[t]",
        "\\centering",
        "\\footnotesize",
        "\\setlength{\\tabcolsep}{4pt}",
    ]
    if table.caption:
        lines.append(f"\\caption{{{tex_escape(table.caption)}}}")
    if label:
        lines.append(f"\\label{{{label}}}")
    lines += [
        f"\\sbox0{{\\begin{{tabular}}{{{''.join(table.align)}}}",
        "\\toprule",
        " & ".join(_tex_header(h, a) for h, a in zip(headers, table.align, strict=True)) + " \\\\",
        "\\midrule",
    ]
    lines += [" & ".join(_tex_cell(c, stacked) for c in row) + " \\\\" for row in table.rows]
    lines += ["\\bottomrule", "\\end{tabular}}%",
              "\\ifdim\\wd0>\\linewidth\\typeout{normbench: table scaled to the line width}%",
              "\\resizebox{\\linewidth}{!}{\\usebox0}\\else\\usebox0\\fi",
              "\\par\\smallskip",
              "\\parbox{\\linewidth}{\\scriptsize\\raggedright"]
    lines += [tex_escape(f) + ("\\par" if i < len(table.footer) - 1 else "") for i, f in enumerate(table.footer)]
    lines += ["}", f"\\end{{{env}}}"]
    return "\n".join(lines) + "\n"
