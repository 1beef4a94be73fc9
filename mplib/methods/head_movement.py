"""Head movement pruning: one learned score per attention head of each attention matrix.

A head ``h`` of width ``d = head_size`` owns rows ``h d ... (h + 1) d - 1`` of the query, key
and value matrices and the same columns of the attention output. Groups
(:mod:`~mplib.methods.coarse`, ``(out, in)`` orientation)::

    query, key, value (attn_in):   group (d, in)    -> one score per head (GPT-2's fused c_attn:
                                                       one per head of q, of k and of v)
    attention output (attn_out):   group (out, d)   -> one score per head
    FFN and other layers:          as neuron_movement (FFN out: columns, others: rows)
    M = E(Top_v(S)),  dL/dS_head = sum over the head's band of (dL/dW') ⊙ W

so one run prunes heads and FFN neurons together, like the "hybrid" recipe of Lagunas et al.
2021 (they pruned attention in blocks and found whole heads emptied; here the head is the
block). Each matrix keeps ``ceil(v H)`` heads of its own: the matrices of a layer may keep
different heads, and only a head kept in both its value rows and its output columns survives
removal. :func:`mplib.shrink.shrink_model` removes a head when its value rows *or* its output
columns are all zero (with value rows zero the head outputs its value bias, which it folds into
the output bias); a head pruned in query/key only stays.

``head_size`` is required (hidden size / number of heads: 64 in BERT-base, 32 in
all-MiniLM-L6-v2).

Taught in: book/13_deploying.ipynb.
"""

from __future__ import annotations

from .coarse import CoarseTopV, neuron_group, role


class HeadMovement(CoarseTopV):
    """``M = E(Top_v(S))`` over heads (attention) and neurons (FFN), straight-through."""

    name = "head_movement"
    options = ("head_size",)
    chapter = "book/13_deploying.ipynb"

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        d = config.head_size
        if d is None:
            raise ValueError(
                "method 'head_movement' needs head_size, the width of one attention head "
                "(hidden_size // num_attention_heads: 64 for BERT-base, 32 for "
                "all-MiniLM-L6-v2); e.g. PruningConfig(method='head_movement', keep_ratio=0.5, "
                "head_size=64)"
            )
        if not isinstance(d, int) or isinstance(d, bool) or d <= 0:
            raise ValueError(f"head_size must be a positive int, got {d!r}")

    def group_for(self, shape, name):
        out, inp = shape
        kind = role(name)
        if kind == "attn_in":
            return (self.config.head_size, inp)
        if kind == "attn_out":
            return (out, self.config.head_size)
        return neuron_group(shape, name)

    def divisibility_message(self, name, shape, group) -> str:
        return (f"head_movement: the weight of {name!r} has shape {shape}, not a whole number "
                f"of heads of head_size={self.config.head_size}. Pass head_size = hidden_size "
                "// num_attention_heads of the model (model.config), or leave this layer out "
                "with exclude_modules")
