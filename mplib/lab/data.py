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
    if name in TASKS:
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
