"""Export the recipe's tokenized RT train/validation rows (via mplib's loaders) to a plain .pt
file, so that replica.py (which does not import mplib) trains on exactly the same token ids.

    PYTHONPATH=.:tools/collapse python tools/collapse/export_data.py
"""
from __future__ import annotations

import torch
from common import CACHE, setup

from mplib.lab.models import encoder_path


def rows(ds):
    return [dict(input_ids=list(r["input_ids"]), label=int(r["label"])) for r in ds]


def main():
    prof, loaders, _ = setup()
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(dict(train=rows(loaders["train"].dataset),
                    validation=rows(loaders["validation"].dataset),
                    encoder=str(encoder_path()), max_length=prof.max_length),
               CACHE / "rt_tokens.pt")
    print(len(loaders["train"].dataset), len(loaders["validation"].dataset), encoder_path())


if __name__ == "__main__":
    main()
