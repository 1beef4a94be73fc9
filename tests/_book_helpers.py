"""The book's table of contents as the tests read it (imported at collection time, for
``parametrize``; hence a module and not a fixture)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent


def toc() -> tuple[list[str], list[str]]:
    """(every ``file:`` of _toc.yml in reading order -- root, parts, chapters, sections --,
    the part captions)."""
    data = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files, captions = [data["root"]], []

    def walk(entries):
        for entry in entries or []:
            if "caption" in entry:
                captions.append(entry["caption"])
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("chapters"))
            walk(entry.get("sections"))

    walk(data.get("parts"))
    walk(data.get("chapters"))
    return files, captions


def resolve(entry: str) -> Path | None:
    """The source file of a toc entry (the toc leaves out the suffix), or None."""
    for suffix in ("", ".ipynb", ".md"):
        path = ROOT / f"{entry}{suffix}"
        if path.is_file():
            return path
    return None


def title(entry: str) -> str:
    """The first level-1 heading of a toc entry's source, as plain text."""
    path = resolve(entry)
    if path is None:
        raise FileNotFoundError(entry)
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    else:
        text = path.read_text()
    match = re.search(r"^#\s+(.+?)\s*$", text, re.MULTILINE)
    assert match, f"{path}: no '# Title' heading"
    return re.sub(r"[*_`]", "", match.group(1))
