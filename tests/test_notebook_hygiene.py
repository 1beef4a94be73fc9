"""Every chapter in _toc.yml is committed executed, in order, cleanly (STYLE rule 11).

nbval (``pytest --nbval-lax``) re-runs the chapters and compares the ``# NBVAL_CHECK_OUTPUT``
cells; these tests check the stored notebooks themselves: that tools/execute_notebooks.py ran
them top to bottom in a python3 kernel, with no errors and no timing metadata left behind.
"""

from __future__ import annotations

import re

import nbformat
import pytest
from _book_helpers import ROOT, resolve, toc

RAISES_TAG = "raises-exception"
CHECK_MARKER = re.compile(r"^\s*#\s*NBVAL_CHECK_OUTPUT\s*$", re.MULTILINE)
CHECK_TAG = "nbval-check-output"


TOC = toc()[0]  # every file: of _toc.yml in reading order
NOTEBOOKS = [e for e in TOC if resolve(e) is not None and resolve(e).suffix == ".ipynb"]


def code_cells(entry: str):
    nb = nbformat.read(resolve(entry), as_version=4)
    return nb, [c for c in nb.cells if c.cell_type == "code"]


def test_toc_files_exist():
    missing = [e for e in TOC if resolve(e) is None]
    assert not missing, f"_toc.yml lists files that do not exist (.ipynb or .md): {missing}"


def test_toc_has_chapters():
    assert NOTEBOOKS, "no .ipynb chapter found in _toc.yml"


@pytest.mark.parametrize("entry", NOTEBOOKS)
def test_kernelspec_is_python3(entry):
    nb, _ = code_cells(entry)
    name = nb.metadata.get("kernelspec", {}).get("name")
    assert name == "python3", f"{entry}: kernelspec name is {name!r}, expected 'python3'"


@pytest.mark.parametrize("entry", NOTEBOOKS)
def test_executed_top_to_bottom(entry):
    _, cells = code_cells(entry)
    assert cells, f"{entry}: no code cells"
    empty = [i for i, c in enumerate(cells) if not c.source.strip()]
    assert not empty, f"{entry}: remove the empty code cells (code cells #{empty}, 0-based)"
    counts = [c.execution_count for c in cells]
    expected = list(range(1, len(cells) + 1))
    assert counts == expected, (
        f"{entry}: execution counts are {counts}, expected {expected}. "
        "Re-run: python tools/execute_notebooks.py " + str(resolve(entry).relative_to(ROOT))
    )


@pytest.mark.parametrize("entry", NOTEBOOKS)
def test_no_unexpected_errors(entry):
    _, cells = code_cells(entry)
    bad = []
    for i, cell in enumerate(cells):
        if RAISES_TAG in cell.metadata.get("tags", []):
            continue
        for out in cell.outputs:
            if out.output_type == "error":
                bad.append(f"code cell #{i} (count {cell.execution_count}): {out.get('ename')}")
    assert not bad, f"{entry}: error outputs in cells not tagged {RAISES_TAG!r}: {bad}"


@pytest.mark.parametrize("entry", NOTEBOOKS)
def test_no_timing_metadata(entry):
    nb = nbformat.read(resolve(entry), as_version=4)
    timed = [i for i, c in enumerate(nb.cells) if "execution" in c.metadata]
    assert not timed, (
        f"{entry}: cells {timed} carry metadata['execution'] timestamps; "
        "execute with tools/execute_notebooks.py, not jupyter execute"
    )


@pytest.mark.parametrize("entry", NOTEBOOKS)
def test_has_checked_output(entry):
    _, cells = code_cells(entry)
    checked = [
        c for c in cells if CHECK_MARKER.search(c.source) or CHECK_TAG in c.metadata.get("tags", [])
    ]
    assert checked, f"{entry}: no '# NBVAL_CHECK_OUTPUT' cell; mark a deterministic fact"
    silent = [c.execution_count for c in checked if not c.outputs]
    assert not silent, f"{entry}: NBVAL_CHECK_OUTPUT cells with no output check nothing: {silent}"


def test_template_is_clean():
    """tools/chapter_template.ipynb is valid, unexecuted, and outside book/ and the toc."""
    path = ROOT / "tools" / "chapter_template.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in cells)
    assert not any("chapter_template" in e for e in TOC)
