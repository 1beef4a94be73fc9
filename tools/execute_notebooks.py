"""Execute chapters top to bottom and store their outputs, reproducibly.

    python tools/execute_notebooks.py                   # every book/*.ipynb, sorted
    python tools/execute_notebooks.py book/02_*.ipynb   # some of them

Each notebook runs in a fresh ``python3`` kernel whose working directory is the notebook's folder,
with the environment of tools/nbenv.py (the same one pytest gives nbval). Cell timing metadata is
neither recorded nor kept, so two runs on the same machine write byte-identical files. A cell that
raises stops the notebook (unless tagged ``raises-exception``) and the script exits non-zero; the
file is then left untouched.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import nbenv  # noqa: E402

TIMEOUT_S = 600


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def execute(path: Path) -> float:
    """Execute one notebook in place; return the wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=TIMEOUT_S,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = merge_streams(cell.outputs)
    nbformat.write(nb, path)
    return elapsed


def merge_streams(outputs: list) -> list:
    """Join consecutive stream outputs of the same name (stdout/stderr).

    A busy kernel may flush one cell's printing as several messages; joining them makes the
    stored notebook independent of how the text happened to be chunked.
    """
    merged: list = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if (out.get("output_type") == "stream" and prev is not None
                and prev.get("output_type") == "stream" and prev.get("name") == out.get("name")):
            prev["text"] = prev["text"] + out["text"]
        else:
            merged.append(out)
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: book/*.ipynb")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "book").glob("*.ipynb"))
    if not paths:
        print("no notebooks found", file=sys.stderr)
        return 1
    nbenv.apply()
    total = 0.0
    failed = []
    for path in paths:
        path = path.resolve()
        try:
            elapsed = execute(path)
        except CellExecutionError as err:
            print(f"FAILED {_rel(path)}\n{err}", file=sys.stderr)
            failed.append(path)
            continue
        total += elapsed
        print(f"{elapsed:7.1f} s  {_rel(path)}", flush=True)
    print(f"{total:7.1f} s  total ({len(paths) - len(failed)} of {len(paths)} notebooks)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
