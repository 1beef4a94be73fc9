"""Fine-pruning through an unmodified transformers.Trainer: PruningCallback (schedule, logs),
PrunedModelForTraining (penalty, distillation in the model's loss), make_optimizer (groups)."""

from __future__ import annotations

import pytest
import torch
from _train_helpers import tiny_loaders, tiny_model
from transformers import Trainer, TrainingArguments

import mplib
from mplib.hf import PrunedModelForTraining, PruningCallback, make_optimizer
from mplib.topk import keep_count

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _args(tmp_path, steps, **kw):
    return TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=steps,
                             per_device_train_batch_size=8, logging_steps=2, report_to=[],
                             disable_tqdm=True, use_cpu=True, save_strategy="no", seed=0, **kw)


def _trainer(tmp_path, method="movement", steps=12, teacher=None, callbacks=None, **cfg):
    loaders, tok = tiny_loaders(tmp_path)
    model = tiny_model()
    cfg = cfg or dict(keep_ratio=0.25)
    pruner = mplib.Pruner(model, mplib.PruningConfig(method=method, **cfg), total_steps=steps,
                          warmup_steps=2, cooldown_steps=3)
    wrapper = PrunedModelForTraining(model, pruner, teacher=teacher)
    opt, sched = make_optimizer(model, lr=1e-3, score_lr=1e-2, total_steps=steps, warmup_steps=2)
    trainer = Trainer(model=wrapper, args=_args(tmp_path, steps),
                      train_dataset=loaders["train"].dataset,
                      eval_dataset=loaders["validation"].dataset,
                      data_collator=loaders["train"].collate_fn, optimizers=(opt, sched),
                      callbacks=callbacks if callbacks is not None else [PruningCallback(pruner)])
    return trainer, model, pruner, opt


def test_trainer_runs_the_schedule_and_logs_sparsity(tmp_path):
    trainer, model, pruner, opt = _trainer(tmp_path)
    scores_before = {n: layer.scores.detach().clone()
                     for n, layer in mplib.masked_layers(model).items()}
    trainer.train()
    assert pruner.state["step"] == 11 and pruner.state["keep_ratio"] == 0.25
    rows = [r for r in trainer.state.log_history if "remaining" in r and "loss" in r]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12]
    n = [layer.weight.numel() for layer in pruner.layers]
    for r in rows:  # achieved == scheduled (exact Top_v per matrix)
        want = sum(keep_count(k, r["keep_ratio"]) for k in n) / sum(n)
        assert r["remaining"] == pytest.approx(want, abs=1e-12)
        assert {"remaining_layer0", "remaining_layer1", "remaining_of_all_parameters"} <= set(r)
    assert rows[0]["keep_ratio"] == pruner.values_at(1)["keep_ratio"] == 1.0
    assert rows[-1]["keep_ratio"] == 0.25
    # the scores trained, in their own group at their own LR, without weight decay
    group = next(g for g in opt.param_groups if g["name"] == "scores")
    assert group["weight_decay"] == 0.0 and group["initial_lr"] == 1e-2
    moved = [not torch.equal(scores_before[k], layer.scores)
             for k, layer in mplib.masked_layers(model).items()]
    assert all(moved)
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics


def test_wrapper_loss_is_task_plus_penalty_plus_distillation(tmp_path):
    loaders, _ = tiny_loaders(tmp_path)
    batch = next(iter(loaders["train"]))
    teacher = tiny_model(seed=3)
    model = tiny_model()
    cfg = mplib.PruningConfig(method="soft_movement", tau=0.1, lam=2.0, lam_schedule="constant")
    pruner = mplib.Pruner(model, cfg, total_steps=10, warmup_steps=1, cooldown_steps=1)
    wrapper = PrunedModelForTraining(model, pruner, teacher=teacher, temperature=2.0,
                                     alpha_distil=0.9, alpha_task=0.1)
    assert not any(p is q for p in wrapper.parameters() for q in teacher.parameters())
    assert not any(k.startswith("_teacher") for k in wrapper.state_dict())
    model.eval()  # no dropout: the two forwards below see the same network
    wrapper.train()
    model.eval()
    out = wrapper(**batch)
    plain = model(**batch)
    with torch.no_grad():
        t_logits = teacher(**{k: v for k, v in batch.items() if k != "labels"}).logits
    want = mplib.distillation_loss(plain.logits, t_logits, plain.loss, temperature=2.0,
                                   alpha_distil=0.9, alpha_task=0.1) + pruner.penalty()
    assert torch.allclose(out.loss, want)
    assert torch.allclose(out.task_loss, plain.loss)
    out.loss.backward()
    assert all(layer.scores.grad is not None for layer in pruner.layers)
    wrapper.eval()  # evaluation: the plain task loss
    assert torch.allclose(wrapper(**batch).loss, plain.loss)


def test_trainer_with_teacher_and_penalty_trains(tmp_path):
    trainer, model, pruner, _ = _trainer(tmp_path, method="l0", steps=6, teacher=tiny_model(2),
                                         lam=1.0)
    trainer.train()
    rows = [r for r in trainer.state.log_history if "lam" in r]
    assert rows and all(r["lam"] == 1.0 for r in rows)


def test_callback_refuses_a_schedule_of_another_length(tmp_path):
    trainer, _, pruner, _ = _trainer(tmp_path, steps=12)
    trainer.args.max_steps = 10
    with pytest.raises(ValueError, match="total_steps=10"):
        trainer.train()
