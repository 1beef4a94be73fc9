"""Model surgery by name: ``wrap`` chosen layers in :class:`MaskedLinear`, ``bake`` or ``unwrap``.

Modules are chosen by ``target_modules`` minus ``exclude_modules``; a pattern matches a module
name when it is equal to it, is a dotted suffix of it (``"attention.self.query"``), or
``re.fullmatch``-es it. With ``target_modules=None`` the default set for the model family is
used: the paper prunes the six weight matrices of every transformer block -- query, key, value,
attention output, FFN in, FFN out -- and leaves embeddings, pooler and task head alone (§5).
For a family without a listed default (DeBERTa-v2, ...) the generic default is every Linear /
Conv1D *inside a numbered block* (a name with an index segment before its end, such as
``encoder.layer.3.attention.self.query_proj``) whose name mentions no embedding, pooler,
classifier or head; a warning names what it chose. Pass ``target_modules`` to be explicit.

* ``wrap(model, config)``: in place; the masked layers share the original Parameters.
* ``bake(model)``: every masked layer becomes a plain layer of its original class holding
  ``W ⊙ M``; eval outputs are identical (bit for bit) to the wrapped model's.
* ``unwrap(model)``: back to the original layers and unmasked weights; scores are dropped.

Taught in: book/01_masks_and_magnitude.ipynb.
"""

from __future__ import annotations

import re
import warnings

import torch
from torch import nn

from .config import PruningConfig
from .masked import MaskedLinear, conv1d_class, is_supported

_BERT_LIKE = (
    r".*\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
    r"|intermediate\.dense|output\.dense)"
)
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": (_BERT_LIKE,),
    "roberta": (_BERT_LIKE,),
    "xlm-roberta": (_BERT_LIKE,),
    "camembert": (_BERT_LIKE,),
    "electra": (_BERT_LIKE,),
    "distilbert": (r".*\.layer\.\d+\.(attention\.(q_lin|k_lin|v_lin|out_lin)|ffn\.(lin1|lin2))",),
    "gpt2": (r".*\.h\.\d+\.(attn\.(c_attn|c_proj)|mlp\.(c_fc|c_proj))",),
}
"""Default ``target_modules`` per Hugging Face ``config.model_type``: the encoder's six matrices."""


def matches(name: str, pattern: str) -> bool:
    """Exact name, dotted suffix, or full regex match."""
    if name == pattern or name.endswith("." + pattern):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def check_module(model) -> None:
    """Raise a ``TypeError`` naming the fix unless ``model`` is a ``torch.nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"mplib prunes a torch.nn.Module (e.g. a Hugging Face model); got "
                        f"{type(model).__name__}. Load the model first (e.g. "
                        "AutoModelForSequenceClassification.from_pretrained(...)), then pass it")


def masked_layers(model: nn.Module) -> dict[str, MaskedLinear]:
    """All :class:`MaskedLinear` modules of ``model`` by qualified name, in module order."""
    check_module(model)
    return {n: m for n, m in model.named_modules() if isinstance(m, MaskedLinear)}


_NOT_IN_BLOCKS = re.compile(r"embed|pooler|classifier|(^|\.|_)(lm_)?head", re.IGNORECASE)


def default_targets(model: nn.Module) -> tuple[str, ...] | None:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return DEFAULT_TARGETS.get(model_type)


def block_linears(candidates: list[str]) -> list[str]:
    """The generic default: candidates inside a numbered block, no embedding/pooler/head."""
    return [n for n in candidates
            if re.search(r"(^|\.)\d+\.", n) and not _NOT_IN_BLOCKS.search(n)]


def select_modules(model: nn.Module, config: PruningConfig) -> list[str]:
    """Names of the modules ``wrap`` would replace (raises if the selection is empty or bad)."""
    check_module(model)
    candidates = [n for n, m in model.named_modules() if n and is_supported(m)]
    targets = config.target_modules
    if targets is None:
        targets = default_targets(model)
        if targets is None:
            targets = _generic_targets(model, candidates)
    for pattern in targets:  # a named module of the wrong type is a clear mistake
        for n, m in model.named_modules():
            if n and (n == pattern or n.endswith("." + pattern)) and not is_supported(m):
                if not any(c.startswith(n + ".") for c in candidates):
                    raise TypeError(
                        f"target {pattern!r} matches {n!r} of type {type(m).__name__}, which "
                        "mplib cannot mask (supported: nn.Linear, transformers Conv1D)"
                    )
    excludes = config.exclude_modules or ()
    chosen = [
        n
        for n in candidates
        if any(matches(n, p) for p in targets) and not any(matches(n, p) for p in excludes)
    ]
    if not chosen:
        raise ValueError(
            f"target_modules={list(targets)} (minus exclude_modules={list(excludes)}) matched no "
            f"Linear/Conv1D module. Candidates: {_listing(candidates)}"
        )
    return chosen


def _generic_targets(model: nn.Module, candidates: list[str]) -> tuple[str, ...]:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    chosen = block_linears(candidates)
    if not chosen:
        raise ValueError(
            f"no default target_modules for model type {model_type!r} "
            f"(defaults exist for {sorted(DEFAULT_TARGETS)}, and no Linear/Conv1D sits inside a "
            f"numbered block); pass target_modules=[...]. Linear/Conv1D modules in this model: "
            f"{_listing(candidates)}"
        )
    warnings.warn(
        f"no default target_modules for model type {model_type!r}; mplib chose the "
        f"{len(chosen)} Linear/Conv1D modules inside numbered blocks (no embeddings, pooler or "
        f"head): {_listing(chosen, limit=8)}. Pass target_modules=[...] to choose yourself",
        UserWarning, stacklevel=4)
    return tuple(re.escape(n) for n in chosen)


def _listing(names: list[str], limit: int = 40) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def wrap(model: nn.Module, config: PruningConfig) -> nn.Module:
    """Replace the selected layers of ``model`` by :class:`MaskedLinear` (in place).

    The masks start at the *final* ``keep_ratio`` / ``tau`` of ``config`` (one-shot pruning);
    a :class:`~mplib.pruner.Pruner` then drives them along the schedule.

    Returns:
        ``model`` itself.
    """
    if not isinstance(config, PruningConfig):
        raise TypeError(f"wrap(model, config) needs a mplib.PruningConfig as config, got "
                        f"{type(config).__name__}; e.g. PruningConfig(method='movement', "
                        "keep_ratio=0.1)")
    if masked_layers(model):
        raise ValueError("model is already wrapped by mplib; call mplib.unwrap or mplib.bake first")
    for name in select_modules(model, config):
        _set_submodule(model, name, MaskedLinear(model.get_submodule(name), config, name))
    if config.scope == "global":
        from .global_topk import assign_global_budgets

        assign_global_budgets(list(masked_layers(model).values()), config.keep_ratio)
    return model


def _plain_layer(layer: MaskedLinear, weight: torch.Tensor) -> nn.Module:
    w = layer.weight
    with torch.random.fork_rng(devices=[]):  # their random init is overwritten: spare the RNG
        if layer.transposed:
            plain = conv1d_class()(w.shape[1], w.shape[0])
        else:
            plain = nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None)
    plain = plain.to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        plain.weight.copy_(weight)
        if layer.bias is not None:
            plain.bias.copy_(layer.bias)
    plain.weight.requires_grad_(w.requires_grad)
    if layer.bias is not None:
        plain.bias.requires_grad_(layer.bias.requires_grad)
    plain.train(layer.training)
    return plain


def bake(model: nn.Module) -> nn.Module:
    """Fold every mask into its weight: plain layers holding ``W ⊙ M`` (in place).

    The result has no mplib modules left and loads/saves as the original model class. For
    ``l0`` the binary eval mask (``1[S > 0]``) is applied.
    """
    for name, layer in masked_layers(model).items():
        with torch.no_grad():
            baked = layer.weight.detach() * layer.mask()
        _set_submodule(model, name, _plain_layer(layer, baked))
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """Undo ``wrap``: original layer classes, the same (unmasked) weight Parameters."""
    for name, layer in masked_layers(model).items():
        plain = _plain_layer(layer, layer.weight.detach())
        plain.weight = layer.weight
        plain.bias = layer.bias
        _set_submodule(model, name, plain)
    return model
