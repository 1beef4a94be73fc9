"""What to prune and how: :class:`PruningConfig`, validated when it is made.

Each knob is named by its meaning (paper Table 1, §3-4):

* ``keep_ratio`` -- the fraction of weights KEPT at the end of the schedule (the paper's
  ``v`` in Top_v; "10 % remaining" is ``keep_ratio=0.1``, sparsity ``1 - keep_ratio``);
* ``tau`` -- a threshold: on ``sigmoid(S)`` for ``soft_movement``, on ``S`` for ``threshold``;
* ``lam`` -- the final weight of the sparsity penalty (``soft_movement``, ``l0``).

The paper's code used one overloaded ``threshold`` argument for all three; we do not.

Taught in: book/01_masks_and_magnitude.ipynb (methods), book/00_intro.md (glossary).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from .methods import METHODS, get_method

SCORE_INITS = ("constant", "uniform", "kaiming")

def _readers(knob: str) -> str:
    names = [name for name, cls in METHODS.items() if knob in cls.knobs]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def _unused_knob_message(method: str, knob: str, knobs: tuple[str, ...]) -> str:
    """The error for a knob ``method`` does not read, naming who reads it and the fix."""
    if knob == "keep_ratio":
        source = " and ".join(knobs) if knobs else "nothing"
        return (f"method {method!r} does not take keep_ratio: its sparsity comes from {source}. "
                f"Drop keep_ratio, or use a Top_v method ({_readers('keep_ratio')})")
    if knob == "tau":
        return (f"method {method!r} does not use tau (a threshold); tau is read only by "
                f"{_readers('tau')}. Drop tau or change method")
    return (f"method {method!r} has no sparsity penalty, so lam does not apply; lam is read by "
            f"{_readers('lam')}. Drop lam or change method")


def _as_patterns(value) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@dataclass
class PruningConfig:
    """Configuration of one pruning run.

    Args:
        method: one of :data:`METHODS`: ``magnitude`` (Top_v of ``|W|``), ``movement``
            (Top_v of learned scores, straight-through), ``soft_movement``
            (``sigmoid(S) > tau`` plus an L1 penalty on ``sigmoid(S)``), ``l0`` (hard-concrete
            gates plus expected-L0 penalty), ``threshold`` (``S > tau``, straight-through),
            and the contrast baselines ``random``, ``accumulated_movement`` (scores
            ``-sum_t W*grad_W``, no straight-through: SparseML's "movement") and ``snip``
            (``sum_t |W*grad_W|``); the structured methods ``block_movement``,
            ``neuron_movement`` and ``head_movement`` (Top_v over one score per block, row or
            column, head; book/13_deploying.ipynb).
        keep_ratio: final fraction of weights kept, in (0, 1]. Required by the Top_v methods
            (magnitude, movement, random, accumulated_movement, snip); an error for the others,
            whose sparsity comes from ``tau``/``lam``.
        tau: final threshold. ``soft_movement``: on ``sigmoid(S)``, in (0, 1), default 0.1
            (the authors' recipe, i.e. ``S > logit(0.1) = -2.197``). ``threshold``: on ``S``,
            default 0.0. An error for methods that do not threshold.
        lam: final penalty weight. ``soft_movement``: L1 on ``sigmoid(S)``, mean-normalised as in
            the authors' code (their lambdas 1...2300 are on this scale). ``l0``: expected L0,
            mean-normalised. Default 0. An error for methods without a penalty.
        scope: ``"local"`` (Top_v inside each matrix) or ``"global"`` (one Top_v over all
            wrapped matrices, so layers get different sparsities). Only for Top_v methods;
            ``soft_movement`` and ``l0`` are global by construction.
        initial_keep_ratio: kept fraction during warm-up (default 1: dense fine-tuning first).
        initial_tau: ``tau`` during warm-up for ``soft_movement`` (default 0: keep all).
        lam_schedule: ``"cubic"`` (lambda_t = lam * progress of the cubic schedule) or
            ``"constant"``. Default: cubic for soft_movement, constant for l0 -- what the
            authors' code ends up doing (it scales lambda by ``v_t / v_final``).
        score_init: ``"constant"``, ``"uniform"`` (U(-scale, scale)) or ``"kaiming"``.
        score_init_value: the constant, or the uniform scale. Default: the method's
            ``default_score_init`` (0; ``logit(0.9) = 2.197`` for ``l0``).
        target_modules: which Linear / GPT-2 Conv1D modules to wrap: names matched exactly, as
            a dotted suffix, or as a regex (``re.fullmatch``). ``None`` selects the default
            set for the model family (Q, K, V, attention output, FFN in and out of every layer).
        exclude_modules: same matching; removed from the selection.
        l0_left, l0_right, l0_beta: hard-concrete stretch limits and temperature
            (Louizos et al. 2018; the paper's l=-0.1, r=1.1, b=2/3).
        global_every: for ``scope="global"``, recompute the per-matrix budgets every this many
            steps (1 = every step, exact).
        block_size: ``block_movement`` only: the block, an int ``b`` (``b x b``) or a pair
            ``(rows, cols)`` of the stored weight; default 32. It must divide every selected
            weight's shape (checked by ``wrap``, naming a size that fits).
        head_size: ``head_movement`` only, required: the width of one attention head,
            ``hidden_size // num_attention_heads`` (64 for BERT-base, 32 for all-MiniLM-L6-v2).
        seed: seed of the ``random`` method's fixed scores. (L0's training noise and the
            ``uniform``/``kaiming`` score initialisations draw from torch's global generator,
            like any other layer: seed it with ``torch.manual_seed``.)
    """

    method: str = "movement"
    keep_ratio: float | None = None
    tau: float | None = None
    lam: float | None = None
    scope: str = "local"
    initial_keep_ratio: float = 1.0
    initial_tau: float = 0.0
    lam_schedule: str | None = None
    score_init: str = "constant"
    score_init_value: float | None = None
    target_modules: tuple[str, ...] | None = None
    exclude_modules: tuple[str, ...] | None = None
    l0_left: float = -0.1
    l0_right: float = 1.1
    l0_beta: float = 2.0 / 3.0
    global_every: int = 1
    seed: int = 0
    block_size: int | tuple[int, int] | None = None
    head_size: int | None = None

    def __post_init__(self):
        cls = get_method(self.method)
        self.target_modules = _as_patterns(self.target_modules)
        self.exclude_modules = _as_patterns(self.exclude_modules)
        for knob in ("keep_ratio", "tau", "lam"):
            if knob not in cls.knobs and getattr(self, knob) is not None:
                raise ValueError(_unused_knob_message(self.method, knob, cls.knobs))
        for option in ("block_size", "head_size"):
            if option not in cls.options and getattr(self, option) is not None:
                readers = [n for n, c in METHODS.items() if option in c.options]
                raise ValueError(f"method {self.method!r} does not use {option}; it is read "
                                 f"only by {' and '.join(readers)}. Drop {option} or change "
                                 "method")
        if "lam" in cls.knobs:
            if self.lam is None:
                self.lam = 0.0
            if not (isinstance(self.lam, (int, float)) and math.isfinite(self.lam)
                    and self.lam >= 0):
                raise ValueError(f"lam must be a finite number >= 0, got {self.lam}")
        if "tau" in cls.knobs:
            if self.tau is None:
                self.tau = cls.default_tau
            if not math.isfinite(self.tau):
                raise ValueError(f"tau must be a finite number, got {self.tau}")
        if self.lam_schedule is None:
            self.lam_schedule = cls.lam_schedule
        if self.lam_schedule not in ("cubic", "constant"):
            raise ValueError(
                f"lam_schedule must be 'cubic' or 'constant', got {self.lam_schedule!r}"
            )
        if self.scope not in ("local", "global"):
            raise ValueError(f"scope must be 'local' or 'global', got {self.scope!r}")
        if self.scope == "global" and "keep_ratio" not in cls.knobs:
            raise ValueError(
                f"scope='global' selects a global Top_v and needs a keep_ratio method; "
                f"{self.method!r} is already global through its single threshold"
            )
        if self.score_init not in SCORE_INITS:
            raise ValueError(f"score_init must be one of {SCORE_INITS}, got {self.score_init!r}")
        if self.score_init_value is None:
            self.score_init_value = cls.default_score_init
        if int(self.global_every) != self.global_every or self.global_every < 1:
            raise ValueError(f"global_every must be a positive integer, got {self.global_every}")
        cls.check_config(self)  # the method's own defaults and checks

    @property
    def method_class(self):
        """The :class:`~mplib.methods.PruningMethod` subclass named by ``method``."""
        return METHODS[self.method]

    @property
    def has_scores(self) -> bool:
        """Whether the method keeps a score tensor ``S`` (learned or a buffer)."""
        return self.method_class.scores != "none"

    @property
    def learned_scores(self) -> bool:
        """Whether ``S`` is an ``nn.Parameter`` trained by the optimizer."""
        return self.method_class.scores == "parameter"

    def to_dict(self) -> dict:
        """Plain-JSON view (for result files)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


def check_fraction(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not (0.0 < value <= 1.0) or math.isnan(value):
        raise ValueError(
            f"{name} is the fraction of weights kept and must be in (0, 1]; got {value!r}. "
            "For 90 % sparsity pass keep_ratio=0.1"
        )
