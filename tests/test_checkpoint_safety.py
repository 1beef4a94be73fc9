"""Training checkpoints are read with torch.load(weights_only=True): a pickle that names a
function is refused without running it, a file that is not a checkpoint is refused by name, and
checkpoints of the earlier layout (a NumPy array in the RNG state) still load. Every torch.load
in the package passes weights_only=True."""

from __future__ import annotations

import ast
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mplib.lab import checkpoint as ckpt_io

PACKAGE = Path(ckpt_io.__file__).parents[1]


def _objects():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def _payload(**extra):
    model, opt, sched = _objects()
    payload = ckpt_io.pack(step=3, total_steps=10, model=model, optimizer=opt, scheduler=sched,
                           pruner=None, history={"rows": [{"step": 1, "loss": 0.5}]},
                           window={"n": 0, "loss": 0.0}, last_masks=None)
    payload.update(extra)
    return payload


def _restore(path):
    model, opt, sched = _objects()
    return ckpt_io.restore(path, total_steps=10, model=nn.Linear(3, 2), optimizer=opt,
                           scheduler=sched, pruner=None, device="cpu")


def test_round_trip_restores_every_generator(tmp_path):
    payload = _payload()
    assert payload["format"] == ckpt_io.FORMAT
    assert isinstance(payload["rng"]["numpy"][1], list)  # plain, no NumPy array pickled
    ckpt_io.save_checkpoint(tmp_path / "c.pt", payload)
    expected = (torch.rand(3), random.random(), np.random.rand(3))
    _restore(tmp_path / "c.pt")
    got = (torch.rand(3), random.random(), np.random.rand(3))
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1]
    assert np.array_equal(got[2], expected[2])


def test_a_checkpoint_of_the_earlier_layout_still_loads(tmp_path):
    legacy = _payload()
    del legacy["format"], legacy["format_version"]
    legacy["rng"]["numpy"] = np.random.get_state()  # a NumPy array, as written before
    torch.save(legacy, tmp_path / "old.pt")
    assert _restore(tmp_path / "old.pt")["step"] == 3


class _RunsCode:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path):
    target = tmp_path / "ran"
    torch.save(_payload(history=_RunsCode(str(target))), tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not an mplib training checkpoint that can be loaded "
                                         "safely .*mkdir"):
        _restore(tmp_path / "evil.pt")
    assert not target.exists()


@pytest.mark.parametrize("content", ["state_dict", "list", "garbage", "empty", "marker"])
def test_other_files_are_refused(tmp_path, content):
    path = tmp_path / "c.pt"
    if content == "state_dict":  # a plain model file: safe to read, but not a checkpoint
        torch.save(nn.Linear(3, 2).state_dict(), path)
    elif content == "list":
        torch.save([1, 2, 3], path)
    elif content == "marker":
        torch.save(_payload(format="something.else"), path)
    else:
        path.write_bytes(b"not a zip" if content == "garbage" else b"")
    with pytest.raises(ValueError, match="is not an mplib training checkpoint"):
        _restore(path)


def test_a_future_format_version_is_refused(tmp_path):
    torch.save(_payload(format_version=2), tmp_path / "c.pt")
    with pytest.raises(ValueError, match="format version 2"):
        _restore(tmp_path / "c.pt")


def test_every_torch_load_in_the_package_is_weights_only():
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"):
                flag = {k.arg: k.value for k in node.keywords}.get("weights_only")
                ok = isinstance(flag, ast.Constant) and flag.value is True
                calls.append((path.relative_to(PACKAGE.parent).as_posix(), node.lineno, ok))
    assert calls, "expected at least the checkpoint loader"
    assert all(ok for *_, ok in calls), [c for c in calls if not c[2]]
