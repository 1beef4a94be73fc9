"""Shared by the bake-and-share tests: a tiny model of each family, pruned, trained two steps
and baked (tests/test_bake_roundtrip.py, tests/test_bake_plain_transformers.py)."""

from __future__ import annotations

import torch
from _core_helpers import loss_of, make_batch, make_model, outputs

import mplib

FAMILIES = ("bert", "distilbert", "roberta", "gpt2")
METHOD = {"bert": ("movement", dict(keep_ratio=0.2)), "distilbert": ("magnitude",
          dict(keep_ratio=0.1)), "roberta": ("l0", dict(lam=1.0, score_init="uniform",
          score_init_value=0.5)), "gpt2": ("movement", dict(keep_ratio=0.3))}


def pruned_and_baked(family):
    """Wrap, train two steps, bake: a plain model with zeros where the masks were 0."""
    model = make_model(family)
    method, cfg = METHOD[family]
    mplib.wrap(model, mplib.PruningConfig(method=method, **cfg))
    opt = torch.optim.AdamW(mplib.param_groups(model, lr=1e-3, score_lr=5e-2))
    model.train()
    batch = make_batch(family)
    for _ in range(2):
        loss_of(model, batch).backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    masks = {n: lay.mask().bool() for n, lay in mplib.masked_layers(model).items()}
    wrapped_out = outputs(model, batch)
    mplib.bake(model)
    assert torch.equal(outputs(model, batch), wrapped_out)
    return model, masks
