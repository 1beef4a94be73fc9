"""From task rows to batches: tokenisation (cached), dynamic padding, seeded data loaders.

* :func:`tokenize_task` truncates every split to ``max_length`` tokens with
  ``Dataset.map(batched=True)`` and caches the result as Arrow files keyed by the split's
  content, the tokenizer and ``max_length`` (so a new process reads them back);
* :func:`make_collator` pads each batch to its own longest sequence;
* :func:`make_loaders` gives one DataLoader per split; the train loader reshuffles each epoch
  from a generator seeded with ``seed`` -- or, under DDP, gives each process its shard through a
  ``DistributedSampler`` with the same seed.

Taught in: book/03_fine_pruning.ipynb (the data); used by every later chapter.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import datasets
import torch
from transformers import DataCollatorWithPadding

__all__ = ["make_collator", "make_loaders", "tokenize_task"]


def _hash(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


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
    tokenized: datasets.DatasetDict, tokenizer, batch_size: int, seed: int, *,
    world_size: int = 1, rank: int = 0,
) -> dict[str, torch.utils.data.DataLoader]:
    """One DataLoader per split; train is reshuffled each epoch from a generator seeded ``seed``.

    With ``world_size > 1`` (DDP) the train split is sharded by a ``DistributedSampler`` (same
    ``seed`` on every process) and ``batch_size`` -- the global batch -- is split evenly.
    """
    if world_size > 1 and batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} is not divisible by {world_size} processes; "
                         "choose a batch size that is a multiple of the process count")
    collate = make_collator(tokenizer)
    loaders = {}
    for split, ds in tokenized.items():
        train = split == "train"
        # Every loader owns its generator: iterating one (even an evaluation loader, which does
        # not shuffle) then never draws from torch's global generator, which drives dropout --
        # so evaluating during training cannot change the run.
        gen = torch.Generator().manual_seed(seed)
        if train and world_size > 1:
            sampler = torch.utils.data.DistributedSampler(
                ds, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
            loaders[split] = torch.utils.data.DataLoader(
                ds, batch_size=batch_size // world_size, sampler=sampler, collate_fn=collate,
                generator=gen)
            continue
        loaders[split] = torch.utils.data.DataLoader(
            ds, batch_size=batch_size, shuffle=train, generator=gen, collate_fn=collate
        )
    return loaders
