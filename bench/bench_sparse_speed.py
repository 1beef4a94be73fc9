#!/usr/bin/env python
"""Does unstructured sparsity make inference faster? Dense zeros against torch's sparse formats.

Usage::

    python bench/bench_sparse_speed.py [--quick] [--out results/bench/sparse_speed.json]
                                       [--threads 2] [--extra-threads 1] [--rounds 15]

**What.** The product ``Y = X W'^T`` of one pruned matrix, for the three matrix shapes of the
MiniLM encoder (384x384 attention, 1536x384 FFN in, 384x1536 FFN out), with ``X`` holding the
tokens of batch 1 or batch 32 at sequence length 128 (128 or 4,096 rows), at remaining fractions
100 % (dense), 50, 30, 10, 5, 3 and 1 %. Three ways to compute it:

* ``dense``: ``torch.nn.functional.linear`` on the masked matrix, zeros included -- what a baked
  model does (the time does not depend on the zeros);
* ``csr``: the kept entries in compressed sparse rows, ``torch.sparse.mm(W_csr, X^T)^T``;
* ``coo``: the same in coordinate format.

Then the whole encoder (6 layers, MiniLM shapes, untrained weights) at 10 % and 3 % remaining,
dense against every Linear's product done in CSR. On a GPU (``--device cuda``, when one with
2:4 sparse tensor cores is present) a 2:4 semi-structured variant is added; it is not measured
on a CPU.

**How.** The mask is uniform at random (the sparse kernels' speed depends on the count of
non-zeros, not on which ones). Each variant is run once untimed, then the variants are timed in
interleaved rounds (``--rounds``) so that a change in the machine's load hits all of them; the
result is the median per variant and its ratio to dense measured in the same rounds. Every sparse
output is checked against the dense one (``max_abs_err``).

**Reading it.** ``speedup`` > 1 means the sparse format is faster than multiplying the zeros.
The remaining fraction where it crosses 1 (if any) is the honest answer to "does unstructured
sparsity pay here"; the whole-model rows say what is left of it once attention, LayerNorm and the
embeddings are counted.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings

import _common
import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

KEEPS = (1.0, 0.5, 0.3, 0.1, 0.05, 0.03, 0.01)
TOKENS = {"batch1": 128, "batch32": 32 * 128}
FORMATS = ("dense", "csr", "coo")


def shapes(model_cfg: dict) -> dict[str, tuple[int, int]]:
    h, f = model_cfg["hidden_size"], model_cfg["intermediate_size"]
    return {"attention": (h, h), "ffn_in": (f, h), "ffn_out": (h, f)}


def random_mask(shape, keep: float, gen: torch.Generator) -> torch.Tensor:
    """A 0/1 mask keeping ``round(keep * N)`` entries (at least one) chosen uniformly."""
    n = shape[0] * shape[1]
    m = torch.zeros(n)
    m[torch.randperm(n, generator=gen)[: max(1, round(keep * n))]] = 1.0
    return m.view(shape)


def masked(out_f: int, in_f: int, keep: float, gen: torch.Generator) -> torch.Tensor:
    w = torch.randn(out_f, in_f, generator=gen) * 0.05
    return w * random_mask(w.shape, keep, gen) if keep < 1.0 else w


def products(w: torch.Tensor) -> dict:
    """One function per format computing ``X W^T`` (each returns a dense (rows, out) tensor)."""
    csr, coo = w.to_sparse_csr(), w.to_sparse_coo().coalesce()
    return {"dense": lambda x: F.linear(x, w),
            "csr": lambda x: torch.sparse.mm(csr, x.t()).t(),
            "coo": lambda x: torch.sparse.mm(coo, x.t()).t()}


def interleaved(fns: dict, arg, rounds: int) -> dict[str, list[float]]:
    """Durations (s) of each function, timed in ``rounds`` interleaved rounds after a warm-up."""
    for fn in fns.values():
        fn(arg)
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(arg)
            times[name].append(time.perf_counter() - t0)
    return times


def ratios(times: dict[str, list[float]]) -> dict:
    """Summary per variant, plus ``speedup`` = dense median / variant median (same rounds)."""
    dense = statistics.median(times["dense"])
    return {name: _common.summary(ts) | {"speedup": round(dense / statistics.median(ts), 3)}
            for name, ts in times.items()}


def matrix_level(model_cfg: dict, rounds: int, keeps=KEEPS, tokens=TOKENS) -> dict:
    gen = torch.Generator().manual_seed(0)
    out = {}
    for shape_name, (o, i) in shapes(model_cfg).items():
        for keep in keeps:
            w = masked(o, i, keep, gen)
            fns = products(w)
            for tok_name, rows in tokens.items():
                x = torch.randn(rows, i, generator=gen)
                ref = fns["dense"](x)
                err = {n: float((fn(x) - ref).abs().max()) for n, fn in fns.items()}
                entry = ratios(interleaved(fns, x, rounds))
                for n in entry:
                    entry[n]["max_abs_err"] = err[n]
                out[f"{shape_name}/{tok_name}/keep{keep:g}"] = dict(
                    shape=[o, i], rows=rows, keep=keep, nnz=int((w != 0).sum()), variants=entry)
    return out


class CSRLinear(torch.nn.Module):
    """A Linear whose product runs in CSR (bias added densely)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.csr = linear.weight.detach().to_sparse_csr()
        self.bias = linear.bias

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        y = torch.sparse.mm(self.csr, flat.t()).t() + self.bias
        return y.reshape(*x.shape[:-1], -1)


def encoder_models(model_cfg: dict, keep: float):
    """(dense-with-zeros, CSR) copies of a MiniLM-shaped encoder pruned at random to ``keep``."""
    import transformers as tf

    torch.manual_seed(0)
    dense = tf.BertModel(tf.BertConfig(**model_cfg)).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in dense.encoder.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.mul_(random_mask(mod.weight.shape, keep, gen))
    sparse = copy.deepcopy(dense)
    for mod in list(sparse.encoder.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(mod, child_name, CSRLinear(child))
    return dense, sparse


def model_level(model_cfg: dict, rounds: int, keeps=(0.1, 0.03), seq_len=128,
                batches=(1, 32)) -> dict:
    out = {}
    for keep in keeps:
        dense, sparse = encoder_models(model_cfg, keep)
        for b in batches:
            ids = torch.randint(0, model_cfg["vocab_size"], (b, seq_len),
                                generator=torch.Generator().manual_seed(2))
            fns = {"dense": lambda x, m=dense: m(input_ids=x).last_hidden_state,
                   "csr": lambda x, m=sparse: m(input_ids=x).last_hidden_state}
            with torch.inference_mode():
                err = float((fns["csr"](ids) - fns["dense"](ids)).abs().max())
                entry = ratios(interleaved(fns, ids, rounds))
            entry["csr"]["max_abs_err"] = err
            out[f"encoder/batch{b}/keep{keep:g}"] = dict(keep=keep, batch=b, seq_len=seq_len,
                                                         variants=entry)
    return out


def run(*, quick: bool, model_cfg: dict, rounds: int, threads: int, extra_threads=(),
        log=print) -> dict:
    keeps = (1.0, 0.1) if quick else KEEPS
    tokens = {"batch1": 8} if quick else TOKENS
    r = 2 if quick else rounds

    def measure():
        with torch.inference_mode():
            res = {"matrix": matrix_level(model_cfg, r, keeps, tokens)}
        log("matrix level done")
        res["encoder"] = model_level(model_cfg, r, keeps=(0.1,) if quick else (0.1, 0.03),
                                     seq_len=8 if quick else 128,
                                     batches=(1,) if quick else (1, 32))
        res["semi_structured_2_4"] = "not measured: needs a CUDA GPU with sparse tensor cores"
        return res

    result = _common.record(__file__, quick=quick, threads=threads, measure=measure)
    for n in extra_threads:
        result[f"matrix_{n}thread"] = _common.with_threads(
            n, lambda: {"entries": matrix_level(model_cfg, r, keeps, tokens)})
    return result


def table(result: dict) -> str:
    lines = [f"{'case':<34}{'dense ms':>10}{'csr x':>8}{'coo x':>8}"]
    for key, e in {**result["matrix"], **result["encoder"]}.items():
        v = e["variants"]
        coo = f"{v['coo']['speedup']:>8.2f}" if "coo" in v else f"{'-':>8}"
        lines.append(f"{key:<34}{v['dense']['median_ms']:>10.3f}{v['csr']['speedup']:>8.2f}{coo}")
    lines.append("x = dense median / variant median, same interleaved rounds (> 1: faster)")
    return "\n".join(lines)


def main(argv=None) -> int:
    return _common.main(argv, __doc__, "sparse_speed", run, table,
                        rounds=dict(type=int, default=15, help="interleaved timing rounds"))


if __name__ == "__main__":
    raise SystemExit(main())
