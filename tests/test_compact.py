"""Compact storage (mplib.compact): round-trips for several methods and keep ratios, every index
encoding decoded by a slow pure-Python oracle through safetensors' own reader, the int8 bound
against exact rational arithmetic, and the size arithmetic on all-MiniLM-L6-v2's shapes."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from _core_helpers import MLP_TARGETS, make_batch, make_model, outputs
from safetensors import safe_open
from torch import nn

import mplib
from mplib.compact import load_compact, save_compact, size_report

CASES = [  # family, method, config: several methods, keep ratios and index encodings
    ("bert", "magnitude", dict(keep_ratio=0.05)),
    ("bert", "movement", dict(keep_ratio=0.5)),
    ("distilbert", "random", dict(keep_ratio=0.3)),
    ("roberta", "l0", dict(lam=1.0, score_init="uniform", score_init_value=2.0)),
    ("gpt2", "magnitude", dict(keep_ratio=0.1)),
    ("gpt2", "soft_movement", dict(tau=0.4, lam=1.0, score_init="uniform", score_init_value=1.0)),
]


def _wrapped(family, method, cfg):
    model = make_model(family)
    if family == "mlp":
        cfg = dict(cfg, target_modules=MLP_TARGETS)
    mplib.wrap(model, mplib.PruningConfig(method=method, **cfg))
    return model


def _file(path):
    """The file through safetensors' own reader (independent of mplib's): tensors, metadata."""
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _oracle_mask(record, tensors) -> torch.Tensor:
    """Decode one matrix's positions with Python loops, straight from the format's definition."""
    rows, cols = record["shape"]
    prefix = record["name"] + ".weight::"
    mask = [[False] * cols for _ in range(rows)]
    if record["index"] == "bitmask":
        data = [int(b) for b in tensors[prefix + "bitmask"]]
        assert len(data) == math.ceil(rows * cols / 8)
        for i in range(len(data) * 8):
            bit = (data[i // 8] >> (i % 8)) & 1
            if i >= rows * cols:
                assert bit == 0  # padding
            elif bit:
                mask[i // cols][i % cols] = True
    else:
        width = {"csr8": 256, "csr16": 65536}[record["index"]]
        segments = math.ceil(cols / width)
        ptr = [int(p) for p in tensors[prefix + "rowptr"]]
        col = [int(c) for c in tensors[prefix + "cols"]]
        assert len(ptr) == rows * segments + 1 and ptr[0] == 0 and ptr[-1] == len(col)
        for seg in range(rows * segments):
            for j in range(ptr[seg], ptr[seg + 1]):
                mask[seg // segments][(seg % segments) * width + col[j]] = True
    return torch.tensor(mask, dtype=torch.bool)


def _oracle_index_bytes(rows, cols, kept):
    """The docstring's arithmetic, written out again."""
    p = 2 if kept < 65536 else 4
    return {"bitmask": math.ceil(rows * cols / 8),
            "csr8": kept + p * (rows * math.ceil(cols / 256) + 1),
            "csr16": 2 * kept + p * (rows * math.ceil(cols / 65536) + 1)}


def _check_file(path, model_masks, weights, report):
    """The file decodes (by the oracle) to the masks and kept values; sizes add up."""
    tensors, meta = _file(path)
    records = json.loads(meta["matrices"])
    assert [r["name"] for r in records] == list(model_masks)
    data_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(8), "little")
    assert report["file_bytes"] == 8 + header + data_bytes
    assert report["total"]["compact"] == data_bytes
    for r in records:
        mask = model_masks[r["name"]]
        assert torch.equal(_oracle_mask(r, tensors), mask), r["name"]
        sizes = _oracle_index_bytes(*r["shape"], r["kept"])
        assert r["index"] == min(sizes, key=lambda k: (sizes[k], list(sizes).index(k)))
        if r["values"] != "int8":  # the kept values, bit for bit, in row-major order
            stored = tensors[r["name"] + ".weight::values"]
            assert torch.equal(stored.view(torch.int32),
                               weights[r["name"]][mask].contiguous().view(torch.int32))
    return records


@pytest.mark.parametrize("family,method,cfg", CASES)
def test_round_trip_is_exact(tmp_path, family, method, cfg):
    model = _wrapped(family, method, cfg)
    batch = make_batch(family)
    layers = mplib.masked_layers(model)
    masks = {n: lay.mask().bool() for n, lay in layers.items()}
    weights = {n: lay.weight.detach().clone() for n, lay in layers.items()}
    report = save_compact(model, tmp_path / "m.safetensors")
    assert size_report(model) == {k: v for k, v in report.items()
                                  if k not in ("file_bytes", "path")}
    _check_file(tmp_path / "m.safetensors", masks, weights, report)

    mplib.bake(model)
    baked_state, baked_out = model.state_dict(), outputs(model, batch)
    loaded, loaded_masks = load_compact(tmp_path / "m.safetensors", with_masks=True)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded_masks.keys() == masks.keys()
    for n in masks:
        assert torch.equal(loaded_masks[n], masks[n]), n
    state = loaded.state_dict()
    assert state.keys() == baked_state.keys()
    for k in state:
        assert torch.equal(state[k], baked_state[k]), k
    assert torch.equal(outputs(loaded, batch), baked_out)  # bit for bit

    # the same file into a skeleton (any weights), and a baked model saves the same matrices
    skeleton = make_model(family, seed=3)
    assert load_compact(tmp_path / "m.safetensors", skeleton) is skeleton
    assert torch.equal(outputs(skeleton, batch), baked_out)
    again = save_compact(model, tmp_path / "baked.safetensors")
    assert again["targeted"] == report["targeted"]
    assert [m["kept"] for m in again["matrices"]] == [m["kept"] for m in report["matrices"]]


def test_plain_torch_module_needs_a_skeleton(tmp_path):
    model = _wrapped("mlp", "magnitude", dict(keep_ratio=0.4))
    batch = make_batch("mlp")
    save_compact(model, tmp_path / "mlp.safetensors", int8=False)
    mplib.bake(model)
    with pytest.raises(ValueError, match="pass a skeleton"):
        load_compact(tmp_path / "mlp.safetensors")
    skeleton = make_model("mlp")
    load_compact(tmp_path / "mlp.safetensors", skeleton)
    assert torch.equal(outputs(skeleton, batch), outputs(model, batch))
    # a baked plain module names its targets; its nonzero entries are kept
    report = save_compact(model, tmp_path / "baked.safetensors", modules=MLP_TARGETS)
    assert [m["name"] for m in report["matrices"]] == list(MLP_TARGETS)
    with pytest.raises(ValueError, match="modules= is for a plain"):
        save_compact(_wrapped("mlp", "magnitude", dict(keep_ratio=0.4)), tmp_path / "x",
                     modules=MLP_TARGETS)


@pytest.mark.parametrize("int8", [False, True])
def test_no_entry_kept_and_all_kept(tmp_path, int8):
    """threshold keeps S > 0: one matrix keeps nothing, one keeps everything, one a pattern."""
    model = make_model("bert")
    mplib.wrap(model, mplib.PruningConfig(method="threshold", tau=0.0, score_init="uniform",
                                          score_init_value=1.0))
    layers = list(mplib.masked_layers(model).values())
    with torch.no_grad():
        layers[0].scores.fill_(-1.0)
        layers[1].scores.fill_(1.0)
    masks = {n: lay.mask().bool() for n, lay in mplib.masked_layers(model).items()}
    weights = {n: lay.weight.detach().clone() for n, lay in mplib.masked_layers(model).items()}
    assert masks[layers[0].name].sum() == 0 and masks[layers[1].name].all()
    report = save_compact(model, tmp_path / "m.safetensors", int8=int8)
    records = _check_file(tmp_path / "m.safetensors", masks, weights, report)
    kinds = {r["name"]: (r["index"], r["kept"]) for r in records}
    assert kinds[layers[0].name] == ("bitmask", 0)  # 32 bytes of zeros beat 17 row pointers
    assert kinds[layers[1].name] == ("bitmask", 256)
    loaded, loaded_masks = load_compact(tmp_path / "m.safetensors", with_masks=True)
    for n in masks:
        assert torch.equal(loaded_masks[n], masks[n]), n
        w = dict(loaded.named_modules())[n].weight.detach()
        assert torch.equal(w[~masks[n]], torch.zeros(int((~masks[n]).sum())))
        if not int8:
            assert torch.equal(w, weights[n] * masks[n])
    if int8:
        tensors, _ = _file(tmp_path / "m.safetensors")
        empty = tensors[layers[0].name + ".weight::scales"]
        assert torch.equal(empty, torch.ones_like(empty))  # rows with no kept entry: scale 1


def test_every_index_encoding_and_dtype(tmp_path):
    """bitmask (dense), csr8 (sparse), csr16 (very sparse long rows), and a float64 model."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 24), nn.Linear(24, 16), nn.Linear(1024, 4)).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model[0].weight.mul_(torch.rand(24, 20, generator=g) < 0.6)
        model[1].weight.mul_(torch.rand(16, 24, generator=g) < 0.02)
        model[2].weight.zero_()[1, 700] = 0.25
    targets = ("0", "1", "2")
    masks = {n: model.get_submodule(n).weight != 0 for n in targets}
    weights = {n: model.get_submodule(n).weight.detach().clone() for n in targets}
    report = save_compact(model, tmp_path / "m.safetensors", modules=targets)
    assert [m["index"] for m in report["matrices"]] == ["bitmask", "csr8", "csr16"]
    tensors, meta = _file(tmp_path / "m.safetensors")
    assert meta["dtype"] == "float64" and "config" not in meta
    for r in report["matrices"]:
        assert torch.equal(_oracle_mask(r, tensors), masks[r["name"]])
        assert torch.equal(tensors[r["name"] + ".weight::values"],
                           weights[r["name"]][masks[r["name"]]])
    skeleton = nn.Sequential(nn.Linear(20, 24), nn.Linear(24, 16), nn.Linear(1024, 4)).double()
    load_compact(tmp_path / "m.safetensors", skeleton)
    for k, v in model.state_dict().items():
        assert torch.equal(skeleton.state_dict()[k], v), k
    with pytest.raises(ValueError, match="values are float64, the model.s weight is F32"):
        load_compact(tmp_path / "m.safetensors", skeleton.float())


# -- int8 ---------------------------------------------------------------------------------------
def _oracle_scale(peak: float) -> float:
    """The smallest float32 >= peak / 127, found in exact rational arithmetic."""
    if peak == 0:
        return 1.0
    target = Fraction(peak) / 127
    s = np.float32(float(target))
    while Fraction(float(s)) < target:
        s = np.nextafter(s, np.float32(np.inf))
    while Fraction(float(np.nextafter(s, np.float32(0)))) >= target:
        s = np.nextafter(s, np.float32(0))
    return float(s)


def test_int8_error_is_within_the_documented_bound(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48), nn.Linear(48, 8))
    with torch.no_grad():  # rows of very different scales, and a row of exact zeros
        model[0].weight.mul_(torch.logspace(-6, 3, 48).unsqueeze(1))
        model[0].weight[5] = 0.0
    mplib.wrap(model, mplib.PruningConfig(method="magnitude", keep_ratio=0.4,
                                          target_modules=["0", "1"]))
    layers = mplib.masked_layers(model)
    masks = {n: lay.mask().bool() for n, lay in layers.items()}
    weights = {n: lay.weight.detach().clone() for n, lay in layers.items()}
    save_compact(model, tmp_path / "q.safetensors", int8=True)
    tensors, _ = _file(tmp_path / "q.safetensors")
    skeleton = nn.Sequential(nn.Linear(64, 48), nn.Linear(48, 8))
    _, loaded_masks = load_compact(tmp_path / "q.safetensors", skeleton, with_masks=True)
    worst = 0.0
    for n, mask in masks.items():
        assert torch.equal(loaded_masks[n], mask)  # masks exact even where a code is 0
        w, got = weights[n].double(), skeleton.get_submodule(n).weight.detach().double()
        scales = tensors[n + ".weight::scales"].double()
        codes = tensors[n + ".weight::values"]
        assert int(codes.min()) >= -127 and int(codes.max()) <= 127
        for r in range(w.shape[0]):
            kept = w[r][mask[r]]
            peak = float(kept.abs().max()) if kept.numel() else 0.0
            assert float(scales[r]) == _oracle_scale(peak), (n, r)
            err = (got[r] - w[r] * mask[r]).abs().max()
            bound = float(scales[r]) * (0.5 + 2.0**-17)
            assert float(err) <= bound and float(err) <= peak / 253.99 + 1e-300, (n, r)
            if peak:
                worst = max(worst, float(err) / peak)
        assert torch.equal(got[~mask], torch.zeros(int((~mask).sum()), dtype=got.dtype))
    assert 0 < worst <= 1 / 253.99


# -- sizes --------------------------------------------------------------------------------------
MINILM = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
              intermediate_size=1536, max_position_embeddings=512)
MINILM_SHAPES = [(384, 384)] * 4 + [(1536, 384), (384, 1536)]  # (out, in) per layer


def _minilm_sized(keep_ratio: float):
    """A BertModel of all-MiniLM-L6-v2's shapes whose 36 matrices keep exactly ceil(vN) random
    entries each (built on the meta device, then storage: its values do not matter here)."""
    import transformers

    with torch.device("meta"):
        model = transformers.BertModel(transformers.BertConfig(**MINILM))
    model = model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
        for n in mplib.surgery.select_modules(model, mplib.PruningConfig(
                method="magnitude", keep_ratio=1.0)):
            w = model.get_submodule(n).weight
            k = math.ceil(Fraction(str(keep_ratio)) * w.numel())
            flat = torch.zeros(w.numel())
            flat[torch.randperm(w.numel(), generator=g)[:k]] = torch.rand(k, generator=g) + 0.1
            w.copy_(flat.reshape(w.shape))
    return model


def test_size_arithmetic_on_minilm_shapes():
    """The table of the module docstring. The compact sizes of the targeted matrices depend only
    on shapes and kept counts, so the ratio goals are guaranteed arithmetically."""
    rows = []
    for v in (0.1, 0.03):
        model = _minilm_sized(v)
        for int8 in (False, True):
            rep = size_report(model, int8=int8)
            assert len(rep["matrices"]) == 36
            expected = 0
            for (out, inp) in MINILM_SHAPES * 6:
                k = math.ceil(Fraction(str(v)) * out * inp)
                sizes = _oracle_index_bytes(out, inp, k)
                assert min(sizes.values()) == sizes["csr8"]
                expected += sizes["csr8"] + (k + 4 * out if int8 else 4 * k)
            t = rep["targeted"]
            assert t["dense"] == 4 * 10_616_832 and t["compact"] == expected
            assert rep["embeddings"]["compact"] == rep["embeddings"]["dense"] == 4 * 11_918_592
            assert rep["total"]["dense"] == 4 * sum(p.numel() for p in model.parameters())
            rows.append((v, int8, t["compact"], t["ratio"], rep["total"]["compact"],
                         rep["total"]["ratio"], rep["embeddings"]["compact"]
                         / rep["total"]["compact"]))
    print("\nkept  int8   targeted MB  ratio   whole MB  ratio  embeddings share")
    for v, int8, tc, tr, wc, wr, share in rows:
        print(f"{v:4.0%}  {int8!s:5}  {tc / 1e6:10.3f}  {tr:5.1f}x  {wc / 1e6:8.2f}  "
              f"{wr:4.2f}x  {share:.1%}")
    ratio = {(v, q): tr for v, q, _, tr, *_ in rows}
    assert ratio[0.1, True] >= 15 and ratio[0.03, True] >= 40  # the goals
    assert ratio[0.1, False] >= 7.5 and ratio[0.03, False] >= 25
    assert all(share > 0.88 for *_, share in rows)  # dense embeddings dominate the file
    assert [round(r[3], 2) for r in rows] == [7.85, 18.4, 25.07, 51.7]  # the docstring table


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_round_trip_exactly(tmp_path, dtype):
    model = make_model("distilbert").to(dtype)
    mplib.wrap(model, mplib.PruningConfig(method="magnitude", keep_ratio=0.2))
    save_compact(model, tmp_path / "h.safetensors")
    mplib.bake(model)
    loaded = load_compact(tmp_path / "h.safetensors")
    state = loaded.state_dict()
    for k, v in model.state_dict().items():
        assert state[k].dtype == v.dtype and torch.equal(state[k], v), k
    assert torch.equal(outputs(loaded, make_batch("distilbert")),
                       outputs(model, make_batch("distilbert")))
