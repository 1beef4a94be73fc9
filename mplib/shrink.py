"""Physical removal: empty attention heads and FFN neurons cut out, a smaller dense model.

Structured pruning (:mod:`mplib.methods.head_movement`, :mod:`~mplib.methods.neuron_movement`,
:mod:`~mplib.methods.block_movement`) leaves whole bands of zeros. A zero band is a saving only
once it is removed: :func:`shrink_model` slices the weight matrices of every transformer block in
place, so each layer keeps its own number of heads ``H_l`` and neurons ``m_l``. In a block of
hidden size ``h`` and head width ``d``, with ``Q, K, V: (H d, h)``, ``O: (h, H d)``,
``W1: (m, h)``, ``W2: (h, m)``:

* head ``j`` goes when its output columns ``O[:, j]`` are all zero (it adds nothing), or when
  its value rows ``V[j]`` are all zero: then every token's value is the bias ``b_V[j]``, the
  softmax weights sum to one, so the head outputs ``b_V[j]`` whatever the query and key, and
  ``O[:, j] b_V[j]`` is added to ``O``'s bias before the head goes;
* neuron ``i`` goes when ``W2[:, i]`` is all zero, or when ``W1[i]`` is all zero: then it outputs
  the constant ``act(b1_i)`` and ``W2[:, i] act(b1_i)`` is added to ``W2``'s bias;
* a head pruned in Q/K only stays (its attention pattern still depends on the input); a block
  left with no head or no neuron keeps the first one (exact: it adds only what it did before).

The outputs equal the masked model's up to float rounding (the folded biases and the shorter
sums; about 1e-16 relative in float64). Hugging Face transformers 5 removed ``prune_heads`` and
the ``pruned_heads`` config entry; ``transformers.pytorch_utils.prune_linear_layer`` remains but
rebuilds the layer in the default dtype (float32), so :func:`keep_linear` here slices instead.

Per-layer sizes do not fit a transformers config, so :func:`save_shrunk` writes one
safetensors file (raw tensors plus a JSON header; no pickle, reading runs no code) with the
architecture and the dense config in its metadata, and :func:`load_shrunk` builds the dense
skeleton, reads each block's head and neuron counts from the stored shapes, slices the
skeleton to them and checks every key and shape before loading (``ValueError`` naming the key).
Supported: BERT-like encoders (BERT, RoBERTa, ELECTRA, MiniLM: ``attention.self.query`` ...)
and DistilBERT.

Taught in: book/13_deploying.ipynb.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

FORMAT, FORMAT_VERSION = "mplib.shrink", "1"


@dataclass(frozen=True)
class Layout:
    """Where a block's pieces live (paths relative to the block)."""

    attention: str  # the self-attention module (holds the head count)
    qkv: tuple[str, str, str]  # query, key, value, relative to ``attention``
    out: str  # attention output projection
    ffn_in: str
    ffn_out: str
    act: str  # the FFN activation
    heads_attr: str  # attribute of ``attention`` holding the head count
    width_attr: str | None  # attribute holding H * d, if any


LAYOUTS = {
    "bert": Layout("attention.self", ("query", "key", "value"), "attention.output.dense",
                   "intermediate.dense", "output.dense", "intermediate.intermediate_act_fn",
                   "num_attention_heads", "all_head_size"),
    "distilbert": Layout("attention", ("q_lin", "k_lin", "v_lin"), "attention.out_lin",
                         "ffn.lin1", "ffn.lin2", "ffn.activation", "n_heads", None),
}


def _get(module: nn.Module, path: str):
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def blocks(model: nn.Module) -> dict[str, Layout]:
    """``{block name: layout}`` for every transformer block whose layers are plain Linear."""
    found = {}
    for name, module in model.named_modules():
        for layout in LAYOUTS.values():
            att = _get(module, layout.attention)
            paths = [f"{layout.attention}.{p}" for p in layout.qkv]
            paths += [layout.out, layout.ffn_in, layout.ffn_out]
            if att is not None and hasattr(att, "attention_head_size") and all(
                    type(_get(module, p)) is nn.Linear for p in paths):
                found[name] = layout
    return found


def _check_supported(model: nn.Module) -> dict[str, Layout]:
    from .surgery import masked_layers

    if masked_layers(model):
        raise ValueError("the model still has mplib masked layers: call mplib.bake(model) "
                         "first (shrink_model removes what bake left as zeros)")
    found = blocks(model)
    if not found:
        raise TypeError(
            f"shrink_model found no transformer block it knows in {type(model).__name__}: it "
            "supports BERT-like encoders (attention.self.query/key/value, attention.output.dense, "
            "intermediate.dense, output.dense) and DistilBERT (q_lin ... ffn.lin2) with plain "
            "nn.Linear layers"
        )
    return found


def keep_linear(layer: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new ``nn.Linear`` keeping rows (``dim=0``) or columns (``dim=1``) ``index`` of ``layer``
    (same dtype and device; the bias follows the rows)."""
    w = layer.weight.detach().index_select(dim, index)
    new = nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None,
                    dtype=w.dtype, device=w.device)
    with torch.no_grad():
        new.weight.copy_(w)
        if layer.bias is not None:
            new.bias.copy_(layer.bias.detach()[index] if dim == 0 else layer.bias.detach())
    return new


def _set(block: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(block.get_submodule(parent) if parent else block, leaf, module)


def _resize(block: nn.Module, layout: Layout, heads: torch.Tensor, neurons: torch.Tensor):
    """Slice ``block`` to the kept head and neuron indices (no folding here)."""
    att = block.get_submodule(layout.attention)
    d = att.attention_head_size
    rows = (heads[:, None] * d + torch.arange(d)).reshape(-1)
    for p in layout.qkv:
        _set(att, p, keep_linear(att.get_submodule(p), rows, 0))
    _set(block, layout.out, keep_linear(block.get_submodule(layout.out), rows, 1))
    setattr(att, layout.heads_attr, len(heads))
    if layout.width_attr:
        setattr(att, layout.width_attr, len(heads) * d)
    _set(block, layout.ffn_in, keep_linear(block.get_submodule(layout.ffn_in), neurons, 0))
    _set(block, layout.ffn_out, keep_linear(block.get_submodule(layout.ffn_out), neurons, 1))


def _zero(t: torch.Tensor, dims) -> torch.Tensor:
    return (t == 0).all(dim=dims) if t.numel() else torch.ones(0, dtype=torch.bool)


@torch.no_grad()
def _shrink_block(block: nn.Module, layout: Layout) -> dict:
    att = block.get_submodule(layout.attention)
    q, k, v = (att.get_submodule(p) for p in layout.qkv)
    out, w1, w2 = (block.get_submodule(p) for p in (layout.out, layout.ffn_in, layout.ffn_out))
    d = att.attention_head_size
    n_heads = v.weight.shape[0] // d
    v_rows = v.weight.reshape(n_heads, d, -1)
    o_cols = out.weight.reshape(out.weight.shape[0], n_heads, d)
    dead_o = _zero(o_cols, (0, 2))
    dead_v = _zero(v_rows, (1, 2)) & (out.bias is not None or v.bias is None)
    gone_heads = dead_o | dead_v
    if bool(gone_heads.all()):
        gone_heads[0] = False
    for j in torch.nonzero(gone_heads & ~dead_o).flatten().tolist():  # fold O[:, j] b_V[j]
        if v.bias is not None:
            out.bias += o_cols[:, j] @ v.bias[j * d:(j + 1) * d]

    dead_w2 = _zero(w2.weight, (0,))
    dead_w1 = _zero(w1.weight, (1,)) & (w2.bias is not None)
    gone = dead_w2 | dead_w1
    if bool(gone.all()):
        gone[0] = False
    fold = gone & ~dead_w2
    if bool(fold.any()):
        act = block.get_submodule(layout.act)
        b1 = w1.bias if w1.bias is not None else torch.zeros_like(w1.weight[:, 0])
        idx = torch.nonzero(fold).flatten()
        w2.bias += w2.weight[:, idx] @ act(b1[idx])
    heads = torch.nonzero(~gone_heads).flatten()
    neurons = torch.nonzero(~gone).flatten()
    _resize(block, layout, heads, neurons)
    return {"heads": len(heads), "heads_before": n_heads, "neurons": len(neurons),
            "neurons_before": w1.weight.shape[0]}


def _linear_params(model: nn.Module, found: dict[str, Layout]) -> int:
    total = 0
    for name, layout in found.items():
        block = model.get_submodule(name) if name else model
        paths = [f"{layout.attention}.{x}" for x in layout.qkv]
        for p in (*paths, layout.out, layout.ffn_in, layout.ffn_out):
            total += block.get_submodule(p).weight.numel()
    return total


def shrink_model(model: nn.Module) -> dict:
    """Remove empty heads and FFN neurons from every block of a baked model (in place).

    Returns ``{"blocks": {name: {"heads", "heads_before", "neurons", "neurons_before"}},
    "linear_params_before", "linear_params_after"}`` (weights of the six matrices per block).
    Raises if the model still has mplib layers (bake it first) or has no supported block.
    """
    found = _check_supported(model)
    before = _linear_params(model, found)
    report = {name: _shrink_block(model.get_submodule(name) if name else model, layout)
              for name, layout in found.items()}
    return {"blocks": report, "linear_params_before": before,
            "linear_params_after": _linear_params(model, found)}


# -- save / load -------------------------------------------------------------------------------
def _aliases(model: nn.Module) -> dict[str, str]:
    first: dict[int, str] = {}
    alias = {}
    for key, t in model.state_dict(keep_vars=True).items():
        if id(t) in first:
            alias[key] = first[id(t)]
        else:
            first[id(t)] = key
    return alias


def save_shrunk(model: nn.Module, path) -> Path:
    """Write a shrunken transformers model to one safetensors file (see the module docstring).

    Tied tensors are stored once (``aliases`` in the metadata). Returns the path.
    """
    from safetensors.torch import save_file

    found = _check_supported(model)
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_json_string"):
        raise TypeError("save_shrunk stores a transformers model (it rebuilds the skeleton "
                        "from model.config on load); got a module without a config")
    alias = _aliases(model)
    tensors = {k: t.detach().contiguous().clone() for k, t in model.state_dict().items()
               if k not in alias}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "architecture": type(model).__name__,
            "config": config.to_json_string(use_diff=False), "aliases": json.dumps(alias),
            "blocks": json.dumps(sorted(found)),
            "dtype": str(next(t.dtype for t in tensors.values() if t.is_floating_point()))
            .removeprefix("torch.")}
    path = Path(path)
    save_file(tensors, str(path), metadata=meta)
    return path


def _fail(path, message: str):
    raise ValueError(f"{path}: {message}")


def _skeleton(path, meta: dict) -> nn.Module:
    import transformers

    arch = meta.get("architecture", "")
    cls = getattr(transformers, arch, None) if arch.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        _fail(path, f"architecture {arch!r} is not a transformers model class")
    try:
        d = json.loads(meta["config"])
        config = transformers.CONFIG_MAPPING[d["model_type"]].from_dict(d)
    except Exception as e:  # noqa: BLE001 - any failure here is a bad config
        _fail(path, f"metadata 'config' does not make a transformers config: {e!r}")
    return cls(config)


def _expect_shape(path, tensors, key: str, shape: tuple[int, ...]) -> None:
    if key not in tensors:
        _fail(path, f"missing tensor {key!r} (expected shape {shape})")
    got = tuple(tensors[key].shape)
    if got != shape:
        _fail(path, f"tensor {key!r} has shape {got}, expected {shape}")


def _block_sizes(path, tensors, name: str, block: nn.Module, layout: Layout):
    """``(heads, neurons)`` read from the stored shapes, every shape of the block checked."""
    pre = f"{name}." if name else ""
    att = block.get_submodule(layout.attention)
    d, n_dense = att.attention_head_size, getattr(att, layout.heads_attr)
    hidden = block.get_submodule(layout.out).weight.shape[0]
    qkey = f"{pre}{layout.attention}.{layout.qkv[0]}.weight"
    if qkey not in tensors or tensors[qkey].ndim != 2:
        _fail(path, f"missing 2-D tensor {qkey!r}")
    rows = tensors[qkey].shape[0]
    if rows % d or not 0 < rows // d <= n_dense:
        _fail(path, f"{qkey!r} has {rows} rows: not 1 to {n_dense} heads of width {d}")
    heads = rows // d
    in_key = f"{pre}{layout.ffn_in}.weight"
    if in_key not in tensors or tensors[in_key].ndim != 2:
        _fail(path, f"missing 2-D tensor {in_key!r}")
    neurons = tensors[in_key].shape[0]
    dense_m = block.get_submodule(layout.ffn_in).weight.shape[0]
    if not 0 < neurons <= dense_m:
        _fail(path, f"{in_key!r} has {neurons} rows: not 1 to {dense_m} neurons")
    for p in layout.qkv:
        lin = att.get_submodule(p)
        _expect_shape(path, tensors, f"{pre}{layout.attention}.{p}.weight",
                      (heads * d, lin.weight.shape[1]))
        if lin.bias is not None:
            _expect_shape(path, tensors, f"{pre}{layout.attention}.{p}.bias", (heads * d,))
    _expect_shape(path, tensors, f"{pre}{layout.out}.weight", (hidden, heads * d))
    w1 = block.get_submodule(layout.ffn_in)
    _expect_shape(path, tensors, in_key, (neurons, w1.weight.shape[1]))
    if w1.bias is not None:
        _expect_shape(path, tensors, f"{pre}{layout.ffn_in}.bias", (neurons,))
    _expect_shape(path, tensors, f"{pre}{layout.ffn_out}.weight",
                  (block.get_submodule(layout.ffn_out).weight.shape[0], neurons))
    return heads, neurons


def load_shrunk(path, model: nn.Module | None = None) -> nn.Module:
    """Read a :func:`save_shrunk` file: the shrunken model, in eval mode.

    ``model``: a dense skeleton of the stored architecture to fill (default: built from the
    stored class and config). Every key and shape is checked first; a problem is a
    ``ValueError`` that names the key.
    """
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as e:  # noqa: BLE001 - the container itself is broken
        _fail(path, f"not a readable safetensors file ({e!r})")
    if meta.get("format") != FORMAT:
        _fail(path, f"format {meta.get('format')!r} is not {FORMAT!r}: not written by "
                    "save_shrunk (files of mplib.save_compact load with mplib.load_compact)")
    if meta.get("format_version") != FORMAT_VERSION:
        _fail(path, f"format_version {meta.get('format_version')!r} is not {FORMAT_VERSION}")
    try:
        alias = json.loads(meta["aliases"])
        dtype = getattr(torch, meta["dtype"])
        assert isinstance(alias, dict) and isinstance(dtype, torch.dtype)
    except Exception:  # noqa: BLE001
        _fail(path, "metadata 'aliases' or 'dtype' is missing or malformed")
    if model is None:
        model = _skeleton(path, meta)
    found = blocks(model)
    if not found:
        _fail(path, f"the skeleton {type(model).__name__} has no block shrink_model supports")
    if sorted(found) != json.loads(meta.get("blocks", "[]")):
        _fail(path, f"the file's blocks {meta.get('blocks')} are not the skeleton's "
                    f"{sorted(found)}")
    model.to(dtype)
    for name, layout in found.items():
        block = model.get_submodule(name) if name else model
        heads, neurons = _block_sizes(path, tensors, name, block, layout)
        _resize(block, layout, torch.arange(heads), torch.arange(neurons))
    state = model.state_dict()
    expected = set(state) - set(alias)
    if set(alias) - set(state) or any(a not in tensors for a in alias.values()):
        _fail(path, f"metadata 'aliases' names keys the model lacks: {sorted(alias)}")
    missing, unknown = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unknown:
        _fail(path, f"keys do not match the model: missing {missing[:5]}, unknown {unknown[:5]}")
    for key in expected:
        if tuple(tensors[key].shape) != tuple(state[key].shape) \
                or tensors[key].dtype != state[key].dtype:
            _fail(path, f"tensor {key!r} is {tensors[key].dtype} {tuple(tensors[key].shape)}, "
                        f"the model expects {state[key].dtype} {tuple(state[key].shape)}")
    model.load_state_dict({**tensors, **{a: tensors[k] for a, k in alias.items()}})
    return model.eval()


__all__ = ["LAYOUTS", "Layout", "blocks", "keep_linear", "load_shrunk", "save_shrunk",
           "shrink_model"]
