"""Every mplib module says where the book teaches it ("Taught in:") or who uses it ("Used by:" /
"Used in:"), and every chapter it names exists: a book file listed in _toc.yml, or a chapter
from the PLANNED list below. Each pruning method's ``chapter`` attribute obeys the same rule."""

from __future__ import annotations

import ast
import re

import pytest
from _book_helpers import ROOT, resolve, title, toc

import mplib

# Chapters that modules point to before they are written. When one lands, the "Taught in:" lines
# (and method `chapter` attributes) that name it must name its book/NN_*.ipynb file instead,
# and its title leaves this set.
PLANNED: set[str] = set()

TOC_FILES = set(toc()[0])
MODULES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "mplib").rglob("*.py"))
BOOK_PATH = re.compile(r"\bbook/\d\d_[\w-]+\.(?:ipynb|md)\b")
PLANNED_TITLE = re.compile(r"planned chapter\s+\"([^\"]+)\"")
LINK_LINE = re.compile(r"^\s*(Taught in|Used by|Used in):", re.MULTILINE)


def docstring(path: str) -> str | None:
    return ast.get_docstring(ast.parse((ROOT / path).read_text()), clean=True)


def paragraph(text: str, label: str) -> str | None:
    """The paragraph that starts with ``label:``, its lines joined (titles may wrap)."""
    match = re.search(rf"^\s*{label}:(.*?)(?:\n\s*\n|\Z)", text, re.MULTILINE | re.DOTALL)
    return " ".join(match.group(1).split()) if match else None


def check_chapter_references(text: str, where: str) -> list[str]:
    """Problems with the book paths and planned titles named in ``text``; [] when all is well."""
    problems = []
    paths = BOOK_PATH.findall(text)
    titles = PLANNED_TITLE.findall(text)
    if not paths and not titles:
        problems.append(f"{where}: names no book/NN_*.ipynb|md file and no planned chapter")
    for path in paths:
        if not (ROOT / path).is_file():
            problems.append(f"{where}: {path} does not exist")
        if path.rsplit(".", 1)[0] not in TOC_FILES:
            problems.append(f"{where}: {path} is not listed in _toc.yml")
    for name in titles:
        if name not in PLANNED:
            problems.append(f"{where}: planned chapter {name!r} is not in PLANNED (a typo, or "
                            "a new plan to add there)")
    return problems


def test_the_walk_finds_the_package():
    assert "mplib/methods/movement.py" in MODULES and "mplib/lab/runner.py" in MODULES
    assert len(MODULES) >= 30


@pytest.mark.parametrize("path", MODULES)
def test_module_docstring_has_a_backlink(path):
    text = docstring(path)
    assert text, f"{path}: no module docstring"
    assert LINK_LINE.search(text), f"{path}: no 'Taught in:', 'Used by:' or 'Used in:' line"


@pytest.mark.parametrize("path", MODULES)
def test_taught_in_names_real_or_planned_chapters(path):
    text = docstring(path) or ""
    where = paragraph(text, "Taught in")
    if where is None:
        return  # a "Used by:" module (checked above)
    assert not check_chapter_references(where, path)


@pytest.mark.parametrize("name", sorted(mplib.METHODS))
def test_method_chapter_attribute(name):
    cls = mplib.METHODS[name]
    assert not check_chapter_references(cls.chapter, f"{name}.chapter")
    # one name per method: exactly a book path or exactly 'planned chapter "TITLE"'
    assert BOOK_PATH.fullmatch(cls.chapter) or PLANNED_TITLE.fullmatch(cls.chapter), cls.chapter
    # and the method's module teaches it in the same place
    module_path = cls.__module__.replace(".", "/") + ".py"
    taught = paragraph(docstring(module_path) or "", "Taught in") or ""
    assert cls.chapter in taught, f"{module_path}: 'Taught in:' does not name {cls.chapter}"


@pytest.mark.parametrize("planned", sorted(PLANNED))
def test_a_planned_chapter_has_not_landed(planned):
    landed = {title(e): e for e in toc()[0] if resolve(e) is not None}
    assert planned not in landed, (
        f"{landed.get(planned)} is titled {planned!r}: name that file instead of the planned "
        "chapter, then remove the title from PLANNED")


def test_every_planned_title_is_still_named_somewhere():
    named = set()
    for path in MODULES:
        named |= set(PLANNED_TITLE.findall(paragraph(docstring(path) or "", "Taught in") or ""))
    named |= {t for cls in mplib.METHODS.values() for t in PLANNED_TITLE.findall(cls.chapter)}
    assert PLANNED == named, f"PLANNED lists titles nothing names: {sorted(PLANNED - named)}"


@pytest.mark.parametrize("text,bad", [
    ("book/01_masks_and_magnitude.ipynb (the table)", False),
    ("book/99_nowhere.ipynb", True),
    ('planned chapter "Deploying sparse models"', True),  # written: name its file instead
    ("somewhere in the book", True),
    ("book/api.md", True),  # not a numbered chapter
])
def test_the_checker_itself(text, bad):
    assert bool(check_chapter_references(text, "example")) == bad


def test_every_module_is_on_the_api_page():
    api = (ROOT / "book" / "api.md").read_text()
    documented = set(re.findall(r"\.\. automodule:: (\S+)", api))
    names = {p.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for p in MODULES}
    names.discard("mplib.__main__")  # the command line, documented by its --help
    assert not names - documented, f"modules missing from book/api.md: {sorted(names - documented)}"
