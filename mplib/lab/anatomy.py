"""What a fine-pruned model kept: the facts the paper's §7 analysis reads off a finished run.

The runner calls :func:`snapshot` on the pretrained model before training and
:func:`mask_anatomy` after it, and stores the result under ``anatomy`` in the result file, so
that a chapter can plot a sweep's anatomy without keeping its weights (conclusions C8-C10, C12
of paper.md §6). For each wrapped matrix ``m`` with ``N_m`` entries of which ``k_m`` are kept:

* **overlap with the pretrained magnitude mask** (C10)::

      overlap_m = |kept_m ∩ Top_{k_m}(|W_pretrained,m|)| / k_m

  1 means the method kept exactly what magnitude pruning of the *pretrained* weights would have
  kept; a random mask scores ``k_m / N_m`` on average (``chance``). Groups and the whole model
  are weighted by ``k_m``. ``overlap_final`` is the same against ``Top_{k_m}(|W_final|)``: 1 for
  magnitude pruning by construction; ``1 - overlap_final`` is the share of kept entries smaller
  in magnitude than magnitude pruning's threshold on the same weights (C8).
* **moved away from zero**: the fraction of kept entries with ``|W_final| > |W_pretrained|``
  (and the same fraction among pruned entries, for contrast);
* **histograms** (C8) of the kept final weights and of all pretrained weights, on fixed bin edges
  (:data:`EDGES`; values outside fall in the first or last bin);
* **a scatter sample** (C9): final weight, score and kept/pruned for :data:`SAMPLE` fixed entries
  of one matrix (the last wrapped one), chosen with a seeded generator so that every run of a
  sweep samples the same positions.

Taught in: book/12_what_gets_pruned.ipynb.
"""

from __future__ import annotations

import torch
from torch import nn

from ..report import group_of, layer_of
from ..surgery import masked_layers

__all__ = ["EDGES", "FIELDS", "SAMPLE", "mask_anatomy", "snapshot"]

EDGES = torch.linspace(-0.3, 0.3, 61).tolist()
"""The bin edges of the weight histograms (60 bins of width 0.01 on [-0.3, 0.3])."""

SAMPLE = 1000
"""Entries of one matrix recorded for the score-versus-weight scatter."""


FIELDS = ("overlap", "overlap_final", "chance", "moved_away_kept", "moved_away_pruned")
"""The per-matrix facts, folded per group, per layer and overall (weighted by kept count)."""


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the wrapped matrices' weights (call before training), keyed by module name."""
    layers = masked_layers(model)
    if not layers:
        raise ValueError("model has no mplib masked layers; call mplib.wrap(model, config) first")
    return {name: layer.weight.detach().clone() for name, layer in layers.items()}


def _histogram(values: torch.Tensor) -> list[int]:
    edges = torch.tensor(EDGES, dtype=values.dtype)
    clipped = values.clamp(edges[0], edges[-1])
    idx = (torch.bucketize(clipped, edges, right=True) - 1).clamp(0, len(EDGES) - 2)
    return torch.bincount(idx, minlength=len(EDGES) - 1).tolist()


def _weighted(rows: list[dict], key: str) -> float:
    total = sum(r["kept"] for r in rows)
    return sum(r[key] * r["kept"] for r in rows) / total if total else float("nan")


def mask_anatomy(model: nn.Module, pretrained: dict[str, torch.Tensor], *, seed: int = 0) -> dict:
    """The anatomy of the current masks against the ``pretrained`` weights (see module doc).

    Returns ``{"per_group": {group: {...}}, "per_layer": {layer: {...}}, "global": {...},
    "histogram": {"edges", "kept_final", "pretrained"}, "scatter": {...}}`` where each
    ``{...}`` holds the :data:`FIELDS`.
    """
    layers = masked_layers(model)
    missing = sorted(set(layers) - set(pretrained))
    if missing:
        raise ValueError(f"no pretrained snapshot for {missing[:3]}...; take it with "
                         "mplib.lab.anatomy.snapshot(model) right after wrapping")
    rows, kept_values, pre_values = [], [], []
    for name, layer in layers.items():
        w = layer.weight.detach().float().cpu().flatten()
        w0 = pretrained[name].float().cpu().flatten()
        if w.shape != w0.shape:
            raise ValueError(f"{name}: snapshot shape {tuple(w0.shape)} != {tuple(w.shape)}")
        m = layer.mask().flatten().cpu().bool()
        k, n = int(m.sum()), m.numel()
        top = torch.zeros(n, dtype=torch.bool)
        top_final = torch.zeros(n, dtype=torch.bool)
        if k:
            top[torch.topk(w0.abs(), k, sorted=False).indices] = True
            top_final[torch.topk(w.abs(), k, sorted=False).indices] = True
        grew = w.abs() > w0.abs()
        rows.append(dict(
            name=name, group=group_of(name), layer=layer_of(name), kept=k, numel=n,
            overlap=int((m & top).sum()) / k if k else float("nan"),
            overlap_final=int((m & top_final).sum()) / k if k else float("nan"),
            chance=k / n,
            moved_away_kept=int(grew[m].sum()) / k if k else float("nan"),
            moved_away_pruned=int(grew[~m].sum()) / (n - k) if k < n else float("nan"),
        ))
        kept_values.append(w[m])
        pre_values.append(w0)

    def fold(key):
        out = {}
        for value in sorted({r[key] for r in rows}, key=str):
            sel = [r for r in rows if r[key] == value]
            out[str(value)] = {f: _weighted(sel, f) for f in
                               FIELDS}
        return out

    last_name, last = list(layers.items())[-1]
    gen = torch.Generator().manual_seed(seed)
    n_last = last.weight.numel()
    idx = torch.randperm(n_last, generator=gen)[: min(SAMPLE, n_last)]
    scores = last.scores if last.scores is not None else last.weight.abs()
    def sample(t):
        return [round(float(x), 6) for x in t.detach().float().flatten().cpu()[idx]]

    return {
        "per_group": fold("group"),
        "per_layer": fold("layer"),
        "global": {f: _weighted(rows, f) for f in
                   FIELDS},
        "histogram": {"edges": EDGES, "kept_final": _histogram(torch.cat(kept_values)),
                      "pretrained": _histogram(torch.cat(pre_values))},
        "scatter": {"matrix": last_name, "weight": sample(last.weight),
                    "pretrained": sample(pretrained[last_name]), "score": sample(scores),
                    "kept": last.mask().flatten().cpu()[idx].bool().tolist()},
    }
