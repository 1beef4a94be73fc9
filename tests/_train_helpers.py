"""Tiny offline fixtures for the training tests: a word-level tokenizer, a learnable toy
sentiment task (in memory or as jsonl files), a 2-layer BERT with hidden size 16."""

from __future__ import annotations

import json
import random
from pathlib import Path

import datasets
import torch
import transformers as tf

POSITIVE = ["good", "great", "fine", "fun", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "weak"]
FILLER = ["the", "a", "movie", "film", "plot", "was", "is", "very", "quite", "acting"]
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *FILLER]


def tiny_tokenizer(folder: Path):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return tf.AutoTokenizer.from_pretrained(folder)


def _rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.choices(FILLER, k=rng.randint(3, 8))
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
        rows.append({"text": " ".join(words), "label": label})
    return rows


def tiny_task(n_train: int = 64, n_eval: int = 16, seed: int = 0) -> datasets.DatasetDict:
    feats = datasets.Features({"text": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["negative", "positive"])})
    parts = {"train": _rows(n_train, seed), "validation": _rows(n_eval, seed + 1),
             "test": _rows(n_eval, seed + 2)}
    return datasets.DatasetDict({k: datasets.Dataset.from_list(v, features=feats)
                                 for k, v in parts.items()})


def write_tiny_task(folder: Path, **kw) -> Path:
    """The same task as jsonl files (``train.jsonl`` ...), loadable by ``load_task(folder)``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, ds in tiny_task(**kw).items():
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in ds))
    return folder


def tiny_config(num_labels: int = 2) -> tf.BertConfig:
    return tf.BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                         hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                         num_labels=num_labels)


def tiny_model(seed: int = 0, num_labels: int = 2):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return tf.BertForSequenceClassification(tiny_config(num_labels))


def save_tiny_encoder(folder: Path, seed: int = 0) -> Path:
    """A tiny BERT checkpoint + tokenizer folder, loadable by ``load_encoder(folder)``."""
    folder = Path(folder)
    tok = tiny_tokenizer(folder / "_tok")
    tiny_model(seed).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def tiny_loaders(tmp: Path, *, batch_size: int = 8, seed: int = 0, n_train: int = 64):
    from mplib.lab.loaders import make_loaders, tokenize_task

    tok = tiny_tokenizer(Path(tmp) / "tok")
    tokenized = tokenize_task(tiny_task(n_train=n_train), tok, max_length=16,
                              cache_dir=Path(tmp) / "tokcache")
    return make_loaders(tokenized, tok, batch_size, seed), tok
