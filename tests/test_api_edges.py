"""Small defects at the API's edges: arguments in the wrong slot fail with the fix in the message,
and a family without a listed default (DeBERTa-v2) gets the generic selection, with a warning."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
import transformers as tf
from torch import nn

import mplib


def test_wrap_refuses_something_that_is_not_a_module():
    cfg = mplib.PruningConfig(method="movement", keep_ratio=0.1)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module.*got str.*Load the model first"):
        mplib.wrap("not a model", cfg)


def test_wrap_refuses_a_method_name_in_place_of_a_config():
    model = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(TypeError, match=r"needs a mplib\.PruningConfig.*got str.*PruningConfig\("):
        mplib.wrap(model, "movement")
    assert isinstance(model[0], nn.Linear)  # nothing was wrapped


def test_labels_in_the_task_loss_slot_are_refused():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    labels = torch.tensor([0, 2, 1, 1])
    with pytest.raises(ValueError, match=r"task_loss must be .*scalar.*Labels go to the model"):
        mplib.distillation_loss(student, teacher, labels)
    # the right call: the model's own scalar loss in that slot
    ok = mplib.distillation_loss(student, teacher, nn.functional.cross_entropy(student, labels))
    assert ok.ndim == 0 and torch.isfinite(ok)


def tiny_deberta():
    cfg = tf.DebertaV2Config(vocab_size=40, hidden_size=16, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=32,
                             max_position_embeddings=16, num_labels=3, relative_attention=True,
                             pos_att_type=["p2c", "c2p"], position_buckets=8,
                             max_relative_positions=16, share_att_key=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return tf.DebertaV2ForSequenceClassification(cfg)


def test_deberta_v2_gets_the_linears_of_the_encoder_blocks_then_trains_and_bakes():
    model = tiny_deberta()
    assert model.config.model_type == "deberta-v2"
    inside_blocks = re.compile(r"(^|.*\.)encoder\.layer\.\d+\..+")
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    want = [n for n in linears if inside_blocks.fullmatch(n)]
    assert len(want) == 16 and len(linears) == 18  # 8 per block; pooler and classifier outside
    cfg = mplib.PruningConfig(method="movement", keep_ratio=0.5, target_modules=None)
    with pytest.warns(UserWarning, match=r"no default target_modules for model type "
                                         r"'deberta-v2'.*16 Linear/Conv1D.*target_modules"):
        mplib.wrap(model, cfg)
    chosen = list(mplib.masked_layers(model))
    assert chosen == want
    assert not any(re.search(r"embed|pooler|classifier", n) for n in chosen)
    assert isinstance(model.pooler.dense, nn.Linear) and isinstance(model.classifier, nn.Linear)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the Pruner sees a wrapped model: no second selection
        pruner = mplib.Pruner(model, cfg, total_steps=4, warmup_steps=1, cooldown_steps=1)
    g = torch.Generator().manual_seed(1)
    batch = {"input_ids": torch.randint(3, 40, (2, 6), generator=g),
             "labels": torch.tensor([0, 2])}
    opt = torch.optim.AdamW(mplib.param_groups(model, lr=1e-3, score_lr=1e-2))
    scores_before = {n: lay.scores.detach().clone()
                     for n, lay in mplib.masked_layers(model).items()}
    model.train()
    pruner.step(2)
    loss = model(**batch).loss + pruner.penalty()
    loss.backward()
    opt.step()
    opt.zero_grad()
    assert any(not torch.equal(lay.scores, scores_before[n])
               for n, lay in mplib.masked_layers(model).items())

    model.eval()
    with torch.no_grad():
        wrapped = model(input_ids=batch["input_ids"]).logits
    masks = {n: lay.mask().clone() for n, lay in mplib.masked_layers(model).items()}
    weights = {n: lay.weight.detach().clone() for n, lay in mplib.masked_layers(model).items()}
    assert all(0 < int(m.sum()) < m.numel() for m in masks.values())
    mplib.bake(model)
    assert not mplib.masked_layers(model)
    with torch.no_grad():
        assert torch.equal(model(input_ids=batch["input_ids"]).logits, wrapped)
    for n, m in masks.items():
        assert type(model.get_submodule(n)) is nn.Linear
        assert torch.equal(model.get_submodule(n).weight.detach(), weights[n] * m)
