"""Tasks as ``datasets`` objects: fixed, hash-based splits of offline or hub data.

One concept: every task the book fine-tunes and prunes on is a ``datasets.DatasetDict`` with
splits ``train`` / ``validation`` / ``test`` and the columns

* ``id`` (str, unique within the task), ``text`` (str), ``text_pair`` (str, pair tasks only),
* ``label`` (a ``ClassLabel`` feature, so ``features["label"].names`` gives the class names).

Offline tasks ``"rt"`` and ``"bbc"`` come from files inside PyPI wheels
(:mod:`mplib.lab.wheels`), de-duplicated and split 80/10/10, stratified by label. The split of
an example is decided by a SHA-256 hash of its id, so it does not depend on the split ``seed``,
on Python's ``hash``, on file-system listing order or on the machine. ``seed`` only picks the
``max_train`` subsample (the fast ``ci`` profile).

Online tasks (for readers with network): ``"glue/<task>"`` and ``"hf:<name>[:<config>]"`` go
through ``datasets.load_dataset``; ``data_dir=`` (or a path as the name) reads the same format
from disk. GLUE test labels are hidden (-1), so ``test`` is GLUE's dev set -- the split the
paper reports -- and ``validation`` is a stratified slice of GLUE train of the same size.
Tokenisation and batching: :mod:`mplib.lab.loaders`.

Taught in: book/03_fine_pruning.ipynb, the first chapter that fine-tunes on real data; used by
every later one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import datasets

from .wheels import TASKS, MissingDataPackage, offline_rows

__all__ = ["TASKS", "MissingDataPackage", "load_squad", "load_task", "task_info"]

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = {"validation": 0.1, "test": 0.1}  # train gets the rest (80 %)
_SPLIT_SALT = "mplib-split-v1"  # changing this changes every split: never do it silently

# GLUE classification tasks: text columns, label names, dev split used as our test split.
_GLUE = {
    "sst2": (("sentence",), ["negative", "positive"], "validation"),
    "cola": (("sentence",), ["unacceptable", "acceptable"], "validation"),
    "mrpc": (("sentence1", "sentence2"), ["not_equivalent", "equivalent"], "validation"),
    "qqp": (("question1", "question2"), ["not_duplicate", "duplicate"], "validation"),
    "qnli": (("question", "sentence"), ["entailment", "not_entailment"], "validation"),
    "rte": (("sentence1", "sentence2"), ["entailment", "not_entailment"], "validation"),
    "wnli": (("sentence1", "sentence2"), ["not_entailment", "entailment"], "validation"),
    "mnli": (
        ("premise", "hypothesis"),
        ["entailment", "neutral", "contradiction"],
        "validation_matched",
    ),
}
_GLUE_HUB_ID = "nyu-mll/glue"
# Column names recognised by the generic loader, first match wins.
_TEXT_COLUMNS = [
    ("premise", "hypothesis"),
    ("question1", "question2"),
    ("sentence1", "sentence2"),
    ("question", "sentence"),
    ("text", "text_pair"),
    ("text",),
    ("sentence",),
    ("content",),
    ("review",),
    ("document",),
]


def _known_names() -> str:
    return ", ".join([*TASKS, *(f"glue/{t}" for t in _GLUE), "hf:<name>[:<config>]", "<path>"])


def _hash(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


# ---------------------------------------------------------------------------- splitting
def _split_examples(rows: Sequence[dict], label_names: list[str]) -> datasets.DatasetDict:
    """Stratified 80/10/10 split; row order and Python's hash play no part.

    Within each class (``n_c`` rows) the rows are ordered by ``sha256(salt, id)`` and cut at the
    10 % and 20 % marks: rows ``[0, round(0.1 n_c))`` go to test, ``[round(0.1 n_c),
    round(0.2 n_c))`` to validation, the rest to train. So every class count is within one row of
    its 10/10/80 % share (within half a row for test and train).
    """
    by_class: dict[int, list[dict]] = {}
    for r in rows:
        by_class.setdefault(r["label"], []).append(r)
    parts: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for members in by_class.values():
        members = sorted(members, key=lambda r: _hash(_SPLIT_SALT, r["id"]))
        f_test, f_val = SPLIT_FRACTIONS["test"], SPLIT_FRACTIONS["validation"]
        cut1 = int(f_test * len(members) + 0.5)
        cut2 = int((f_test + f_val) * len(members) + 0.5)
        parts["test"] += members[:cut1]
        parts["validation"] += members[cut1:cut2]
        parts["train"] += members[cut2:]
    return datasets.DatasetDict(
        {
            s: _to_dataset(sorted(p, key=lambda r: _hash(_SPLIT_SALT, r["id"])), label_names)
            for s, p in parts.items()
        }
    )


def _to_dataset(rows: list[dict], label_names: list[str]) -> datasets.Dataset:
    cols = ["id", "text", "text_pair"] if rows and "text_pair" in rows[0] else ["id", "text"]
    features = datasets.Features({c: datasets.Value("string") for c in cols})
    features["label"] = datasets.ClassLabel(names=label_names)
    return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in features}, features)


def _stratified_take(ds: datasets.Dataset, n: int, salt: str) -> tuple[list[int], list[int]]:
    """Indices of a stratified, hash-ordered sample of size ``n`` (largest-remainder quotas),
    and of the rest. Every class gets ``floor(n p_c)`` or ``ceil(n p_c)`` rows."""
    labels, ids = list(ds["label"]), list(ds["id"])
    classes = sorted(set(labels))
    sizes = {c: labels.count(c) for c in classes}
    exact = {c: n * sizes[c] / len(labels) for c in classes}
    quota = {c: int(exact[c]) for c in classes}
    by_remainder = sorted(classes, key=lambda c: (-(exact[c] - quota[c]), c))
    for c in by_remainder[: n - sum(quota.values())]:
        quota[c] += 1
    order = sorted(range(len(labels)), key=lambda i: _hash(salt, ids[i]))
    taken, rest = [], []
    for i in order:
        if quota[labels[i]] > 0:
            quota[labels[i]] -= 1
            taken.append(i)
        else:
            rest.append(i)
    return taken, rest


# ---------------------------------------------------------------------------- pair tasks
_PAIR_SALT = "mplib-pairs-v1"  # changing this changes every pair: never do it silently


def _ordered(rows: list[dict], *salt: object) -> list[dict]:
    return sorted(rows, key=lambda r: _hash(_PAIR_SALT, *salt, r["id"]))


def _pair_row(a: dict, b: dict, label: int, *salt: object) -> dict:
    """One pair; which text comes first is decided by a hash, so order says nothing."""
    pid = f"{a['id']}|{b['id']}"
    if int(_hash(_PAIR_SALT, *salt, pid), 16) % 2:
        a, b = b, a
    return dict(id=f"{a['id']}|{b['id']}", text=a["text"], text_pair=b["text"], label=label)


def _rt_pairs(rows: list[dict], split: str, spec: dict) -> list[dict]:
    """Pairs of snippets of one split; label 1 (``same``) when both have the same polarity.

    In each of ``spec["rounds"]`` rounds every snippet is used at most once: positives ``P``
    and negatives ``N`` are ordered by a hash (salted with the split and round), ``q =
    min(|P|, |N|) // 2`` mixed pairs zip ``P[:q]`` with ``N[:q]``, and the rest of ``P`` and of
    ``N`` are paired neighbour by neighbour into same-polarity pairs, taken alternately
    (pos-pos, neg-neg, ...) until there are as many as mixed pairs. So every round is exactly
    balanced and same-polarity pairs are as often positive as negative (within one).
    """
    out = []
    for r in range(spec["rounds"]):
        pos = _ordered([x for x in rows if x["label"] == 1], split, r)
        neg = _ordered([x for x in rows if x["label"] == 0], split, r)
        q = min(len(pos), len(neg)) // 2
        mixed = list(zip(pos[:q], neg[:q], strict=True))
        pp = list(zip(pos[q::2], pos[q + 1 :: 2], strict=False))
        nn = list(zip(neg[q::2], neg[q + 1 :: 2], strict=False))
        same = [p for duo in zip(pp, nn, strict=False) for p in duo]
        same += pp[len(nn):] + nn[len(pp):]
        n = min(len(mixed), len(same))
        out += [_pair_row(a, b, 0, split, r) for a, b in mixed[:n]]
        out += [_pair_row(a, b, 1, split, r) for a, b in same[:n]]
    return _ordered(out, split, "order")


_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"']))\s+(?=[A-Z0-9\"'])")
MIN_WORDS, MAX_WORDS = 8, 60


def article_sentences(text: str) -> list[str]:
    """Body sentences of a BBC article: title (first line) dropped, paragraphs split at
    sentence ends, sentences of ``MIN_WORDS``..``MAX_WORDS`` words kept (drops captions,
    datelines and run-ons), duplicates within the article dropped."""
    body = text.split("\n", 1)[1] if "\n" in text else ""
    seen, out = set(), []
    for para in body.split("\n"):
        for sent in _SENTENCE_END.split(para.strip()):
            sent = sent.strip()
            if MIN_WORDS <= len(sent.split()) <= MAX_WORDS and sent not in seen:
                seen.add(sent)
                out.append(sent)
    return out


def distinct_articles(rows: list[dict]) -> list[dict]:
    """Articles in sorted-id order, without any that shares a body sentence (as cut by
    :func:`article_sentences`) with an article kept before it. BBC News holds rewrites of the
    same story; were they split apart, a test sentence would also be a training sentence."""
    seen: set[str] = set()
    kept = []
    for r in sorted(rows, key=lambda r: r["id"]):
        sents = article_sentences(r["text"])
        if not seen.intersection(sents):
            seen.update(sents)
            kept.append(r)
    return kept


def _bbc_pairs(rows: list[dict], split: str, spec: dict) -> list[dict]:
    """Sentence pairs from the articles of one split; label 1 (``same_article``) when both come
    from the same article, 0 when the second comes from another article of the *same topic*.

    Each article gives up to ``spec["anchors"]`` anchor sentences (hash order); anchor ``k`` is
    paired once with the next sentence in that order (a positive) and once with a sentence of
    another article of its topic (a negative), so every anchor is in one positive and one
    negative and the classes are exactly balanced. Articles are the unit of the split: no
    article, hence no sentence of it, is in two splits.
    """
    by_topic: dict[int, list[dict]] = {}
    sents = {r["id"]: article_sentences(r["text"]) for r in rows}
    for r in rows:
        if len(sents[r["id"]]) >= 2:
            by_topic.setdefault(r["label"], []).append(r)
    out = []
    for _topic, arts in sorted(by_topic.items()):
        if len(arts) < 2:
            continue
        for art in arts:
            mine = _ordered(
                [dict(id=f"{art['id']}#{i}", text=t) for i, t in enumerate(sents[art["id"]])],
                split, "sentences")
            others = _ordered([a for a in arts if a["id"] != art["id"]], split, art["id"])
            for k in range(min(spec["anchors"], len(mine) // 2)):
                anchor, partner = mine[2 * k], mine[2 * k + 1]
                other = others[k % len(others)]
                theirs = _ordered(
                    [dict(id=f"{other['id']}#{i}", text=t)
                     for i, t in enumerate(sents[other["id"]])],
                    split, anchor["id"])
                out.append(_pair_row(anchor, partner, 1, split))
                out.append(_pair_row(anchor, theirs[0], 0, split))
    return _ordered(out, split, "order")


# ---------------------------------------------------------------------------- online / on disk
def _load_raw(hub_id: str | None, config: str | None, data_dir, cache_dir) -> datasets.DatasetDict:
    """``datasets.load_dataset`` from the Hub, or the same format from ``data_dir``.

    ``data_dir`` may hold a ``DatasetDict.save_to_disk`` folder or parquet/json/jsonl/csv files
    whose names start with the split (``train.parquet``, ``validation_matched-00000-of-00001
    .parquet``: the Hub's own layout, optionally inside a ``<config>/`` subfolder).
    """
    cache = str(cache_dir) if cache_dir is not None else None
    if data_dir is None:
        return datasets.load_dataset(hub_id, config, cache_dir=cache)
    root = Path(data_dir)
    if config and (root / config).is_dir():
        root = root / config
    if (root / "dataset_dict.json").exists():
        return datasets.load_from_disk(str(root))
    builders = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}
    files = sorted(f for f in root.iterdir() if f.suffix in builders)
    if not files:
        raise FileNotFoundError(f"no dataset_dict.json or {sorted(builders)} files in {root}")
    kinds = {builders[f.suffix] for f in files}
    if len(kinds) > 1:
        raise ValueError(f"mixed file formats {sorted(kinds)} in {root}")
    data_files: dict[str, list[str]] = {}
    for f in files:
        data_files.setdefault(f.stem.split("-")[0].split(".")[0], []).append(str(f))
    return datasets.load_dataset(kinds.pop(), data_files=data_files, cache_dir=cache)


def _normalise(
    raw: datasets.DatasetDict, text_cols, label_names, test_split: str | None, prefix: str
) -> datasets.DatasetDict:
    """Rename to ``id/text/text_pair/label``, make ``label`` a ClassLabel, build the 3 splits."""
    first = raw[next(iter(raw))]
    if text_cols is None:
        text_cols = next((c for c in _TEXT_COLUMNS if set(c) <= set(first.column_names)), None)
        if text_cols is None or "label" not in first.column_names:
            raise ValueError(
                f"need a 'label' column and text columns among {_TEXT_COLUMNS}; "
                f"found {first.column_names}"
            )
    rename = dict(zip(text_cols, ("text", "text_pair"), strict=False))
    out = {}
    for split, ds in raw.items():
        keep = [*text_cols, "label"]
        ds = ds.remove_columns([c for c in ds.column_names if c not in keep + ["idx", "id"]])
        if "id" in ds.column_names:  # e.g. a DatasetDict saved from load_task
            ids = [str(i) for i in ds["id"]]
        else:
            ids = [
                f"{prefix}{split}/{i}"
                for i in (ds["idx"] if "idx" in ds.column_names else range(len(ds)))
            ]
        ds = ds.remove_columns([c for c in ("idx", "id") if c in ds.column_names])
        ds = ds.add_column("id", ids).rename_columns(rename)
        out[split] = ds
    feat = out[next(iter(out))].features["label"]
    if label_names is None:
        if isinstance(feat, datasets.ClassLabel):
            label_names = feat.names
        else:
            values = {v for ds in out.values() for v in ds["label"] if v != -1}
            label_names = (
                sorted(map(str, values))
                if isinstance(next(iter(values)), str)
                else [str(i) for i in range(max(values) + 1)]
            )
    target = datasets.ClassLabel(names=label_names)
    for split, ds in out.items():
        if not isinstance(ds.features["label"], datasets.ClassLabel):
            if ds.features["label"].dtype == "string":
                ds = ds.map(
                    lambda b: {"label": [target.str2int(v) for v in b["label"]]}, batched=True
                )
            ds = ds.cast_column("label", datasets.ClassLabel(names=label_names))
        out[split] = ds.select_columns(["id", *rename.values(), "label"])

    def labelled(split):
        return split in out and len(out[split]) > 0 and min(out[split]["label"]) >= 0

    test_split = test_split or ("test" if labelled("test") else "validation")
    if not labelled(test_split):
        test, train = _stratified_take(out["train"], int(0.1 * len(out["train"])), "test")
        out[test_split], out["train"] = out["train"].select(test), out["train"].select(train)
    result = {"test": out[test_split]}
    if test_split != "validation" and labelled("validation"):
        result["validation"] = out["validation"]
        result["train"] = out["train"]
    else:  # carve validation from train, as large as the test split
        n = min(len(result["test"]), len(out["train"]) // 10)
        val, train = _stratified_take(out["train"], n, "validation")
        result["validation"], result["train"] = out["train"].select(val), out["train"].select(train)
    return datasets.DatasetDict({s: result[s] for s in SPLITS})


# ---------------------------------------------------------------------------- public API
def load_task(
    name: str, *, seed: int = 0, max_train: int | None = None, cache_dir=None, data_dir=None
) -> datasets.DatasetDict:
    """Load a task as a ``DatasetDict`` with splits train/validation/test (see module doc).

    Args:
        name: ``"rt"``, ``"bbc"``, ``"glue/<task>"``, ``"hf:<name>[:<config>]"`` or a local path.
        seed: picks the ``max_train`` subsample; the splits themselves never depend on it.
        max_train: keep a stratified, deterministic subsample of this many training rows.
        cache_dir: cache folder handed to ``datasets.load_dataset`` (online / on-disk tasks).
        data_dir: read the task's files from here instead of the wheel (rt, bbc) or the Hub.
    """
    if name in TASKS and "base" in TASKS[name]:  # a pair task, built inside each base split
        base = TASKS[name]["base"]
        rows, _ = offline_rows(base, data_dir)
        if base == "bbc":
            rows = distinct_articles(rows)
        base_splits = _split_examples(rows, TASKS[base]["label_names"])
        build = _rt_pairs if base == "rt" else _bbc_pairs
        dsd = datasets.DatasetDict(
            {
                s: _to_dataset(build(base_splits[s].to_list(), s, TASKS[name]),
                               TASKS[name]["label_names"])
                for s in SPLITS
            }
        )
    elif name in TASKS:
        rows, _ = offline_rows(name, data_dir)
        dsd = _split_examples(rows, TASKS[name]["label_names"])
    elif name.startswith("glue/"):
        task = name.split("/", 1)[1]
        if task not in _GLUE:
            raise ValueError(f"unknown GLUE task {task!r}; known: {sorted(_GLUE)}")
        cols, names, dev = _GLUE[task]
        raw = _load_raw(_GLUE_HUB_ID, task, data_dir, cache_dir)
        dsd = _normalise(raw, cols, names, dev, prefix=f"{task}/")
    elif name.startswith("hf:"):
        hub_id, _, config = name[3:].partition(":")
        dsd = _normalise(
            _load_raw(hub_id, config or None, data_dir, cache_dir), None, None, None, prefix=""
        )
    elif Path(name).exists():
        dsd = _normalise(_load_raw(None, None, name, cache_dir), None, None, None, prefix="")
    else:
        raise ValueError(f"unknown task {name!r}; known: {_known_names()}")
    if max_train is not None:
        if max_train <= 0:
            raise ValueError(f"max_train must be positive, got {max_train}")
        if max_train < len(dsd["train"]):
            taken, _ = _stratified_take(dsd["train"], max_train, f"train-subsample/{seed}")
            dsd["train"] = dsd["train"].select(sorted(taken))
    return dsd


def load_squad(*, data_dir=None, cache_dir=None) -> datasets.DatasetDict:
    """SQuAD v1.1 as ``datasets`` ships it (``id, title, context, question, answers``), unchanged.

    Online only for the book's purposes (no wheel ships SQuAD); ``data_dir`` reads the same
    format from disk. The paper's SQuAD numbers are quoted, not reproduced.
    """
    return _load_raw("rajpurkar/squad", None, data_dir, cache_dir)


def task_info(name: str, **load_kwargs) -> dict:
    """Sizes, label counts per split, source, licence and citation keys, computed from the data."""
    dsd = load_task(name, **load_kwargs)
    names = dsd["train"].features["label"].names
    counts = {s: {n: 0 for n in names} for s in dsd}
    for s, ds in dsd.items():
        for v in ds["label"]:
            counts[s][names[v]] += 1
    meta = TASKS.get(name, {})
    dropped = {}
    if name in TASKS:  # what the raw files held before unlabelled rows and duplicates went
        _, dropped = offline_rows(name, load_kwargs.get("data_dir"))
    return dict(
        name=name,
        **dropped,
        sizes={s: len(ds) for s, ds in dsd.items()},
        total=sum(len(ds) for ds in dsd.values()),
        label_names=names,
        label_counts=counts,
        text_columns=[c for c in ("text", "text_pair") if c in dsd["train"].column_names],
        source=meta.get("source", name),
        licence=meta.get("licence", "see the dataset card"),
        citation=meta.get("citation", ["wang2018glue"] if name.startswith("glue/") else []),
    )
