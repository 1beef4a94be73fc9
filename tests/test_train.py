"""The plain fine-pruning loop (mplib.train) on a tiny offline BERT: it learns, it logs the
scheduled and the achieved sparsity (equal for Top_v methods), and a killed run resumes
bit-for-bit."""

from __future__ import annotations

import pytest
import torch
from _train_helpers import tiny_loaders, tiny_model

import mplib
from mplib.lab.train import evaluate, linear_warmup_decay, progress_enabled, train
from mplib.topk import keep_count

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def loaders(tmp_path):
    return tiny_loaders(tmp_path)[0]


def test_dense_loop_learns_the_toy_task(loaders):
    model = tiny_model()
    torch.manual_seed(0)
    before = evaluate(model, loaders["validation"])
    hist = train(model, None, loaders, total_steps=64, lr=1e-2, warmup=0.1, log_every=16,
                 progress=False)
    after = evaluate(model, loaders["validation"])
    assert set(before) == {"accuracy", "loss", "examples"}
    # learning, not a lucky split: the loss falls by a third and most examples are right (which
    # examples flip near the boundary depends on the dropout stream)
    assert after["loss"] < 0.67 * before["loss"] and after["accuracy"] >= 0.8
    assert [r["step"] for r in hist["log"]] == [16, 32, 48, 64]
    assert hist["eval"][-1]["accuracy"] == after["accuracy"]


def _expected_remaining(model, keep_ratio):
    sizes = [layer.weight.numel() for layer in mplib.masked_layers(model).values()]
    return sum(keep_count(n, keep_ratio) for n in sizes) / sum(sizes)


@pytest.mark.parametrize("method,scope", [("movement", "local"), ("magnitude", "local"),
                                          ("random", "local"), ("movement", "global"),
                                          ("magnitude", "global")])
def test_achieved_keep_ratio_equals_the_schedule(loaders, method, scope):
    model = tiny_model()
    T = 24
    cfg = mplib.PruningConfig(method=method, keep_ratio=0.2, scope=scope)
    pruner = mplib.Pruner(model, cfg, total_steps=T, warmup_steps=2, cooldown_steps=6)
    torch.manual_seed(0)
    hist = train(model, pruner, loaders, total_steps=T, lr=1e-3, log_every=2, progress=False)
    assert len(hist["log"]) == T // 2
    for row in hist["log"]:
        assert row["keep_ratio"] == pruner.values_at(row["step"] - 1)["keep_ratio"]
        if scope == "global":  # one global Top_v: exactly ceil(v * N) over all matrices
            n = sum(layer.weight.numel() for layer in pruner.layers)
            assert row["remaining"] * n == keep_count(n, row["keep_ratio"])
        else:
            assert row["remaining"] == pytest.approx(
                _expected_remaining(model, row["keep_ratio"]), abs=1e-12)
        assert set(row["remaining_per_layer"]) == {"0", "1"}
    assert hist["log"][-1]["keep_ratio"] == 0.2
    assert "regrown" not in hist["log"][0]
    assert all(0.0 <= r["regrown"] <= 1.0 for r in hist["log"][1:])
    if method == "random":  # fixed scores: shrinking Top_v never brings a weight back
        assert all(r["regrown"] == 0.0 for r in hist["log"][1:])
    assert mplib.remaining_fraction(model) == pytest.approx(0.2, abs=2 / 256)


def test_penalty_and_distillation_enter_the_objective(loaders):
    teacher = tiny_model(seed=1)
    model = tiny_model()
    cfg = mplib.PruningConfig(method="soft_movement", tau=0.1, lam=5.0, lam_schedule="constant")
    pruner = mplib.Pruner(model, cfg, total_steps=8, warmup_steps=1, cooldown_steps=2)
    torch.manual_seed(0)
    hist = train(model, pruner, loaders, total_steps=8, lr=1e-3, log_every=4, teacher=teacher,
                 progress=False)
    row = hist["log"][0]
    assert row["lam"] == 5.0 and 0.0 < row["tau"] <= 0.1
    # objective = 0.9 * T^2 * KL + 0.1 * CE + lam * mean(sigmoid(S)), sigmoid(0) = 1/2
    assert row["objective"] > 0.1 * row["loss"] + 5.0 * 0.4


def test_pruner_and_loop_must_agree_on_total_steps(loaders):
    model = tiny_model()
    pruner = mplib.Pruner(model, mplib.PruningConfig(method="magnitude", keep_ratio=0.5),
                          total_steps=10)
    with pytest.raises(ValueError, match="total_steps=10"):
        train(model, pruner, loaders, total_steps=12, progress=False)
    with pytest.raises(ValueError, match="epochs or total_steps"):
        train(model, None, loaders, progress=False)


def test_epochs_set_the_length(loaders):
    model = tiny_model()
    hist = train(model, None, loaders, epochs=0.5, lr=1e-3, log_every=100, progress=False)
    assert hist["total_steps"] == len(loaders["train"]) // 2 == hist["steps_done"]


def test_lr_warmup_then_linear_decay():
    f = [linear_warmup_decay(t, warmup_steps=4, total_steps=12) for t in range(12)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4:] == [(12 - t) / 8 for t in range(4, 12)]


def test_progress_bars_follow_the_environment(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress_enabled(True) and not progress_enabled(False)
    monkeypatch.setenv("CI", "true")
    assert not progress_enabled(True)
    monkeypatch.delenv("CI")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not progress_enabled(True)


# ------------------------------------------------------------------------- checkpoint / resume
class Killed(Exception):
    pass


def _run(tmp_path, method, *, ckpt=None, kill_at=None, seed=0, **cfg):
    """One fine-pruning run on fresh objects, as a new process would build them."""
    loaders = tiny_loaders(tmp_path, seed=seed)[0]
    model = tiny_model(seed=seed)
    T = 20
    pruner = mplib.Pruner(model, mplib.PruningConfig(method=method, **cfg), total_steps=T,
                          warmup_steps=2, cooldown_steps=4)
    torch.manual_seed(seed)  # dropout stream; a resumed run restores it from the checkpoint

    def kill(step, _model):
        if kill_at is not None and step + 1 == kill_at:
            raise Killed  # like SIGKILL: the steps since the last checkpoint are lost

    hist = train(model, pruner, loaders, total_steps=T, lr=3e-3, score_lr=5e-2, log_every=3,
                 checkpoint_dir=ckpt, checkpoint_every=4, seed=seed, on_step_end=kill,
                 progress=False)
    return model, pruner, hist


def _masks(model):
    return {n: layer.mask() for n, layer in mplib.masked_layers(model).items()}


@pytest.mark.parametrize("method,cfg", [
    ("movement", dict(keep_ratio=0.3)),
    ("movement", dict(keep_ratio=0.3, scope="global", global_every=3)),
    ("accumulated_movement", dict(keep_ratio=0.3)),
    ("l0", dict(lam=1.0)),
])
def test_killed_run_resumes_bit_for_bit(tmp_path, method, cfg):
    ref_model, _, ref_hist = _run(tmp_path, method, **cfg)

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Killed):
        _run(tmp_path, method, ckpt=ckpt, kill_at=11, **cfg)  # last checkpoint: after step 8
    assert (ckpt / "checkpoint.pt").exists() and not (ckpt / "checkpoint.pt.tmp").exists()
    saved = torch.load(ckpt / "checkpoint.pt", weights_only=False)
    assert saved["step"] == 8

    model, pruner, hist = _run(tmp_path, method, ckpt=ckpt, **cfg)
    assert hist["resumed_from"] == 8 and hist["steps_done"] == 20
    assert pruner.state == pruner.values_at(19)
    ref_state, state = ref_model.state_dict(), model.state_dict()
    assert ref_state.keys() == state.keys()
    for k in ref_state:
        assert torch.equal(ref_state[k], state[k]), k
    for k, m in _masks(ref_model).items():
        assert torch.equal(m, _masks(model)[k]), k
    strip = ("resumed_from", "train_seconds", "train_cpu_seconds", "step_seconds")
    assert {k: v for k, v in hist.items() if k not in strip} == \
        {k: v for k, v in ref_hist.items() if k not in strip}


def test_checkpoint_of_another_length_is_refused(tmp_path):
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Killed):
        _run(tmp_path, "magnitude", ckpt=ckpt, kill_at=6, keep_ratio=0.5)
    loaders = tiny_loaders(tmp_path)[0]
    with pytest.raises(ValueError, match="total_steps"):
        train(tiny_model(), None, loaders, total_steps=7, checkpoint_dir=ckpt, progress=False)


@pytest.mark.parametrize("scope", ["local", "global"])
def test_movement_masks_do_not_depend_on_the_score_lr(loaders, scope):
    """Scores start equal and Adam's step ignores the gradient's scale, so ``score_lr`` only
    rescales every score: same masks, same weights (the claim of the fine-pruning chapter)."""
    def run(score_lr):
        model = tiny_model()
        cfg = mplib.PruningConfig(method="movement", keep_ratio=0.2, scope=scope)
        pruner = mplib.Pruner(model, cfg, total_steps=24, warmup_steps=2, cooldown_steps=6)
        torch.manual_seed(0)
        train(model, pruner, loaders, total_steps=24, lr=1e-3, score_lr=score_lr, log_every=4,
              progress=False)
        return pruner

    a, b = run(1e-2), run(1e-1)
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert torch.equal(la.mask(), lb.mask())
        torch.testing.assert_close(lb.scores, 10 * la.scores, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(la.weight, lb.weight, rtol=0, atol=1e-6)
    assert any(not torch.equal(la.mask(), torch.ones_like(la.mask())) for la in a.layers)


@pytest.mark.parametrize("field", ["log_every", "checkpoint_every", "eval_every"])
def test_step_intervals_must_be_positive(field):
    from mplib.lab.train import TrainConfig

    with pytest.raises(ValueError, match=f"{field} must be a positive number of steps"):
        TrainConfig(**{field: 0})
    assert getattr(TrainConfig(**{field: 3}), field) == 3
