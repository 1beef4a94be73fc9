"""The built HTML book, opened in headless Chromium with no network: maths typeset by the
vendored MathJax, figures present, every chapter in the sidebar.

Needs ``chromium`` and a built book (``make book``). Without them these tests skip, except when
the ``CI`` environment variable is set: then a missing browser or build is a failure.
A screenshot of one chapter is saved to ``_build/screenshots/`` for a human to look at.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlparse

import nbformat
import pytest
from _book_helpers import ROOT, resolve, title, toc

pytestmark = pytest.mark.browser

HTML = ROOT / "_build" / "html"
SCREENSHOT_CHAPTER = "book/02_straight_through"
SCREENSHOTS = ROOT / "_build" / "screenshots"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
)
MATHJAX_SCRIPT = "tex-mml-chtml.js"
RAW_TEX = ("$$", "\\(", "\\[", "\\begin{")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def source(entry: str) -> Path:
    path = resolve(entry)
    if path is None:
        raise FileNotFoundError(entry)
    return path


def has_png_outputs(entry: str) -> bool:
    path = source(entry)
    if path.suffix != ".ipynb":
        return False
    nb = nbformat.read(path, as_version=4)
    return any(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )


FILES, CAPTIONS = toc()


class Page(HTMLParser):
    """Visible text (no script/style/code), images, scripts and sidebar links of a page."""

    HIDDEN = {"script", "style", "pre", "code", "textarea", "noscript", "template"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.visible: list[str] = []
        self.images: list[str] = []
        self.scripts: list[str] = []
        self.nav_links: list[str] = []
        self.nav_captions: list[str] = []
        self._hidden = 0
        self._nav = 0
        self._in_link = False
        self._in_caption = False
        self._buf: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in self.HIDDEN:
            self._hidden += 1
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        if tag == "nav":
            if self._nav or "bd-docs-nav" in (attrs.get("class") or ""):
                self._nav += 1
        if self._nav and tag == "a":
            self._in_link, self._buf = True, []
        if self._nav and tag == "span" and "caption-text" in (attrs.get("class") or ""):
            self._in_caption, self._buf = True, []

    def handle_endtag(self, tag):
        if tag in self.HIDDEN and self._hidden:
            self._hidden -= 1
        if tag == "nav" and self._nav:
            self._nav -= 1
        if tag == "a" and self._in_link:
            self.nav_links.append(" ".join("".join(self._buf).split()))
            self._in_link = False
        if tag == "span" and self._in_caption:
            self.nav_captions.append(" ".join("".join(self._buf).split()))
            self._in_caption = False

    def handle_data(self, data):
        if self._in_link or self._in_caption:
            self._buf.append(data)
        if not self._hidden:
            self.visible.append(data)

    @property
    def text(self) -> str:
        return html.unescape(" ".join(self.visible))


@pytest.fixture(scope="session")
def browser() -> str:
    exe = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    missing = []
    if exe is None:
        missing.append("no chromium binary on PATH (make chromium)")
    if not (HTML / f"{FILES[0]}.html").is_file():
        missing.append(f"no built book in {HTML.relative_to(ROOT)} (make book)")
    if missing:
        reason = "; ".join(missing)
        if in_ci():
            pytest.fail(f"CI is set, so the render check must run: {reason}")
        pytest.skip(reason)
    return exe


def run_browser(exe: str, tmp: Path, *args: str) -> str:
    result = subprocess.run(
        [exe, *FLAGS, f"--user-data-dir={tmp}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {result.stderr[-2000:]}"
    return result.stdout


@pytest.fixture(scope="session")
def rendered(browser, tmp_path_factory):
    """Page objects of every toc file: (static HTML as built, DOM after scripts ran)."""
    cache: dict[str, tuple[Page, Page, str, str]] = {}

    def get(entry: str):
        if entry not in cache:
            path = HTML / f"{entry}.html"
            assert path.is_file(), f"{path} was not built"
            static = path.read_text()
            dom = run_browser(
                browser, tmp_path_factory.mktemp("chromium"), "--dump-dom", path.as_uri()
            )
            cache[entry] = (Page(static), Page(dom), static, dom)
        return cache[entry]

    return get


def local_target(entry: str, url: str) -> Path:
    """The file a relative URL on the page of ``entry`` points to."""
    page = HTML / f"{entry}.html"
    target = urlparse(urljoin(page.as_uri(), url))
    return Path(target.path)


@pytest.mark.parametrize("entry", FILES)
def test_math_typeset(rendered, entry):
    static_page, dom_page, static, dom = rendered(entry)
    n_math = len(re.findall(r'class="math notranslate nohighlight"', static))
    n_typeset = dom.count("<mjx-container")
    if n_math:
        assert n_typeset >= n_math, f"{entry}: {n_math} formulas, {n_typeset} typeset by MathJax"
    assert "<mjx-merror" not in dom, f"{entry}: MathJax reports a TeX error"
    text = dom_page.text
    raw = [t for t in RAW_TEX if t in text]
    assert not raw, f"{entry}: raw TeX {raw} left in the visible text"


@pytest.mark.parametrize("entry", FILES)
def test_no_cdn(rendered, entry):
    _, _, static, dom = rendered(entry)
    assert "cdn.jsdelivr.net" not in static
    assert "cdn.jsdelivr.net" not in dom


@pytest.mark.parametrize("entry", FILES)
def test_mathjax_loaded_once_from_the_book(rendered, entry):
    static_page, dom_page, static, _ = rendered(entry)
    # Sphinx adds MathJax only to pages with maths: exactly once there, never elsewhere.
    expected = 1 if 'class="math notranslate nohighlight"' in static else 0
    for page, kind in ((static_page, "built HTML"), (dom_page, "DOM")):
        srcs = [s for s in page.scripts if MATHJAX_SCRIPT in s]
        assert len(srcs) == expected, f"{entry} ({kind}): MathJax script x{len(srcs)}: {srcs}"
    if not expected:
        return
    target = local_target(entry, srcs[0])
    assert target.is_file(), f"{entry}: MathJax src {srcs[0]} resolves to missing {target}"
    assert target.resolve().parent == (HTML / "mathjax").resolve()


@pytest.mark.parametrize("entry", FILES)
def test_figures_load(rendered, entry):
    _, dom_page, _, _ = rendered(entry)
    images = [src for src in dom_page.images if "_images/" in src]
    missing = [src for src in images if not local_target(entry, src).is_file()]
    assert not missing, f"{entry}: images not on disk: {missing}"
    if has_png_outputs(entry):
        assert images, f"{entry}: the notebook has PNG outputs but the page shows no _images/ img"


@pytest.mark.parametrize("entry", FILES)
def test_sidebar_lists_every_chapter(rendered, entry):
    _, dom_page, _, _ = rendered(entry)
    links = set(dom_page.nav_links)
    absent = [title(e) for e in FILES if title(e) not in links]
    assert not absent, f"{entry}: sidebar lacks {absent}; it has {sorted(links)}"
    assert dom_page.nav_captions == CAPTIONS, f"{entry}: sidebar parts {dom_page.nav_captions}"


# Measured on this book (2026-12): a chapter's first screen has 5-7 % ink, 1,100-2,300 colours and
# its commonest colour on 79-92 % of the pixels; an empty page has 0 % ink and one colour, and
# Chromium's "file not found" page 0.2 % ink with one colour on 99.8 % (both are PNGs > 10 kB).
MIN_INK = 0.02  # fraction of pixels with some channel below INK_LEVEL
INK_LEVEL = 235
MIN_COLOURS = 256
MAX_BACKGROUND = 0.97  # the commonest colour's share


def test_screenshot(browser, rendered, tmp_path):
    from PIL import Image

    entry = SCREENSHOT_CHAPTER if SCREENSHOT_CHAPTER in FILES else FILES[1]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"{Path(entry).name}.png"
    shot.unlink(missing_ok=True)
    page = HTML / f"{entry}.html"
    run_browser(
        browser,
        tmp_path,
        "--hide-scrollbars",
        f"--screenshot={shot}",
        "--window-size=1280,1800",
        page.as_uri(),
    )
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot at {shot}"
    header = shot.read_bytes()[:24]
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and (width, height) == (1280, 1800)
    # not blank: ink, many colours, no single colour covering the page
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
    colours = rgb.getcolors(maxcolors=width * height)  # [(count, (r, g, b)), ...]
    pixels = width * height
    ink = sum(n for n, c in colours if min(c) < INK_LEVEL) / pixels
    background = max(n for n, _ in colours) / pixels
    assert ink >= MIN_INK, f"{shot}: only {ink:.2%} of the pixels carry ink (blank page?)"
    assert len(colours) >= MIN_COLOURS, f"{shot}: {len(colours)} colours (blank page?)"
    assert background <= MAX_BACKGROUND, f"{shot}: one colour covers {background:.2%}"
    # and the page's maths went through MathJax (the DOM after the same page's scripts ran)
    _, _, static, dom = rendered(entry)
    n_math = static.count('class="math notranslate nohighlight"')
    assert n_math > 0, f"{entry}: the screenshot chapter should show maths"
    assert dom.count("<mjx-container") >= n_math and "<mjx-merror" not in dom
