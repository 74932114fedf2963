"""Every table normbench commits compiles in a two-column paper without an overfull box (pdflatex + booktabs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TABLES = sorted((REPO / "results").glob("*/*.tex")) + [REPO / "tests" / "golden" / "report_fixture_table.tex"]

requires_pdflatex = pytest.mark.skipif(shutil.which("pdflatex") is None,
                                       reason="pdflatex not installed (Debian: texlive-latex-recommended)")

DOCUMENT = r"""\documentclass[twocolumn]{article}
\usepackage{booktabs,graphicx}
\begin{document}
Some text of the paper.
\input{%s}
\end{document}
"""


def compile_table(tex: Path, tmp_path: Path) -> str:
    doc = tmp_path / "paper.tex"
    doc.write_text(DOCUMENT % tex.as_posix())
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert proc.returncode == 0, f"{tex} does not compile:\n{proc.stdout[-2000:]}"
    return log


@requires_pdflatex
@pytest.mark.parametrize("tex", TABLES, ids=lambda p: str(p.relative_to(REPO)))
def test_table_compiles_without_overfull_boxes(tex, tmp_path):
    log = compile_table(tex, tmp_path)
    assert "Overfull \\hbox" not in log, f"{tex} is wider than its column or page"
    if "results" in tex.parts:  # a committed study's table fits at its natural size
        assert "normbench: table scaled" not in log, f"{tex} only fits scaled down: drop or shorten columns"
