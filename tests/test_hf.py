"""Fine-pruning through an unmodified transformers.Trainer: PruningCallback (schedule, logs),
PrunedModelForTraining (penalty, distillation in the model's loss), make_optimizer (groups)."""

from __future__ import annotations

import pytest
import torch
from _train_helpers import tiny_loaders, tiny_model
from transformers import Trainer, TrainerCallback, TrainingArguments

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


class _SeedAtStart(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            torch.manual_seed(args.seed)


class _ClipInGroupOrder(TrainerCallback):
    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                       1.0)


def test_aligned_trainer_reproduces_the_plain_loop_bit_for_bit(tmp_path):
    """book/09_hf_trainer.ipynb's claim: with the plain loop's data order, its dropout seed and
    its clipping order, the Trainer + mplib.hf run *is* mplib.lab.train's run (losses, masks,
    weights, scores): the adapters add and drop nothing. Dropout is on (p = 0.1)."""
    from mplib.lab.train import train

    steps, seed = 12, 0
    loaders, _ = tiny_loaders(tmp_path)
    cfg = mplib.PruningConfig(method="movement", keep_ratio=0.25)

    def new():
        model = tiny_model()
        pruner = mplib.Pruner(model, cfg, total_steps=steps, warmup_steps=2, cooldown_steps=3)
        return model, pruner

    plain, p_plain = new()
    torch.manual_seed(seed)
    hist = train(plain, p_plain, loaders, total_steps=steps, lr=1e-3, score_lr=1e-2, warmup=2,
                 log_every=1, progress=False, eval_at_end=False, seed=seed)

    train_ds, n_batches = loaders["train"].dataset, len(loaders["train"])
    order = []
    for epoch in range(-(-steps // n_batches)):
        gen = torch.Generator().manual_seed(seed + 1_000_003 * epoch)
        idx = torch.utils.data.DataLoader(range(len(train_ds)), batch_size=8, shuffle=True,
                                          generator=gen)
        order += [int(i) for b in idx for i in b]
    hf_model, p_hf = new()
    opt, sched = make_optimizer(hf_model, lr=1e-3, score_lr=1e-2, total_steps=steps,
                                warmup_steps=2)
    trainer = Trainer(model=PrunedModelForTraining(hf_model, p_hf),
                      args=_args(tmp_path, steps, train_sampling_strategy="sequential",
                                 max_grad_norm=0.0),
                      train_dataset=train_ds.select(order),
                      data_collator=loaders["train"].collate_fn, optimizers=(opt, sched),
                      callbacks=[PruningCallback(p_hf), _SeedAtStart(), _ClipInGroupOrder()])
    trainer.train()
    # logging_steps=2 in _args: the Trainer's row is a float32 sum of two steps over 2; compare
    # the per-step objectives through the same arithmetic
    per_step = torch.tensor([r["objective"] for r in hist["log"]], dtype=torch.float32)
    rows = [r for r in trainer.state.log_history if "loss" in r]
    assert [r["step"] for r in rows] == list(range(2, steps + 1, 2))
    for r in rows:
        want = (torch.tensor(0.0) + per_step[r["step"] - 2] + per_step[r["step"] - 1]).item() / 2
        assert r["loss"] == want
        assert r["remaining"] == hist["log"][r["step"] - 1]["remaining"]
    for (name, a), b in zip(plain.named_parameters(), hf_model.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert hist["log"][-1]["remaining"] < 0.3  # it did prune
