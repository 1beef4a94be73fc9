"""Bake and share: a baked model goes through ``save_pretrained`` / ``from_pretrained``
(safetensors) to identical eval outputs, bit for bit (the folder loading in plain transformers
without mplib is tests/test_bake_plain_transformers.py). Mean-pooled models (mplib.lab) keep
their weights but not their pooling in plain transformers."""

from __future__ import annotations

import os

import pytest
import torch
from _bake_helpers import FAMILIES, pruned_and_baked
from _core_helpers import make_batch, make_model, outputs
from safetensors.torch import load_file

import mplib


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each family pruned, baked and saved with save_pretrained; the expected logits too."""
    root = tmp_path_factory.mktemp("baked")
    out = {}
    for family in FAMILIES:
        model, masks = pruned_and_baked(family)
        model.save_pretrained(root / family)
        out[family] = (model, masks, outputs(model, make_batch(family)))
    return root, out


@pytest.mark.parametrize("family", FAMILIES)
def test_save_pretrained_round_trip_is_bit_exact(saved, family):
    root, models = saved
    model, masks, expected = models[family]
    files = os.listdir(root / family)
    assert "model.safetensors" in files and not any(n.endswith(".bin") for n in files)
    stored = load_file(str(root / family / "model.safetensors"))
    assert not any("scores" in k for k in stored)
    for name, mask in masks.items():  # the zeros are in the file
        w = stored[f"{name}.weight"]
        assert torch.equal(w != 0, mask), name
    loaded = type(model).from_pretrained(root / family)
    loaded.eval()
    assert torch.equal(outputs(loaded, make_batch(family)), expected)
    state = loaded.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v), k


def test_mean_pooled_model_keeps_weights_but_not_pooling_in_plain_transformers(tmp_path):
    """use_mean_pooling changes no parameter name, so save_pretrained works; plain
    from_pretrained pools [CLS] again (only config.mplib_pooling="mean" records the choice), so
    re-apply use_mean_pooling after loading -- or use load_compact, which does it."""
    import transformers

    from mplib.compact import load_compact, save_compact
    from mplib.lab.models import use_mean_pooling

    model = use_mean_pooling(make_model("bert"))
    batch = make_batch("bert")
    mplib.wrap(model, mplib.PruningConfig(method="magnitude", keep_ratio=0.3))
    save_compact(model, tmp_path / "mean.safetensors")
    mplib.bake(model)
    expected = outputs(model, batch)
    model.save_pretrained(tmp_path / "mean")

    plain = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "mean").eval()
    assert plain.config.mplib_pooling == "mean"
    assert not torch.equal(outputs(plain, batch), expected)  # [CLS] pooling: other logits
    assert torch.equal(outputs(use_mean_pooling(plain), batch), expected)
    assert torch.equal(outputs(load_compact(tmp_path / "mean.safetensors"), batch), expected)
