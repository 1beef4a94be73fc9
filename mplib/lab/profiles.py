"""Named experiment scales: ``ci`` (seconds, CPU), ``cpu`` (hours, CPU) and ``full`` (GPU).

A chapter never edits its code to change scale (STYLE rule 10): it names a profile, and the
runner (:mod:`mplib.lab.runner`) reads every size and rate from it. The same profile names are used
by :func:`mplib.lab.notebook.setup`. A profile is a plain dataclass; ``replace(profile, epochs=8)``
or ``--set epochs=8`` on the command line gives a variant, and result files record the values
actually used.

Schedule (paper §3, Eq. 5, authors' code): with ``T = epochs * steps_per_epoch`` optimizer steps,
the LR warm-up and the dense pruning warm-up both last ``t_i = warmup_frac * T`` steps, the cubic
runs until ``T - t_f`` with ``t_f = cooldown_frac * T``, then the masks stay at the target.

Budget matters, and depth too. With the paper's score settings (Adam, score LR 1e-2, scores
initialised at 0) a score after ``t`` steps measures how *consistently* its weight moved, not
how much, and Top_v of such scores does not depend on the score LR at all (tested). Movement to
10 % and to 3 % behaves on the 2-layer model with ~1,500 pruning steps (``epochs=8,
num_layers=2``: level with magnitude), but on the full 6-layer model every CPU recipe measured
(2-6 epochs, lr 3e-5 or 1e-4, a one-epoch dense warm-up, distillation, a mean-pooled head)
collapsed to chance within ~100 steps of the start of the cubic, while magnitude kept ~80 % and
a *random* mask under the same schedule 76 %.
``python -m mplib probe`` (:mod:`mplib.lab.probes`) shows the first cut is the weak point: after up
to 1,200 dense steps a one-shot movement cut to 70 % costs about as much as a random one, a
magnitude cut almost nothing. See ``results/recipes/README.md`` and the fine-pruning chapter.

Taught in: book/03_fine_pruning.ipynb (profiles and the runner).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class Profile:
    """Sizes and rates of one experiment scale.

    Attributes:
        name: the profile's name (``ci``, ``cpu``, ``full``).
        model: Hugging Face model name or local folder of the encoder (None: the packaged
            all-MiniLM-L6-v2, see :func:`mplib.lab.models.load_encoder`).
        num_layers: keep only the first ``num_layers`` encoder layers (None: all 6).
        pooling: what the classification head reads: ``"cls"`` (the [CLS] state, the paper's
            BERT setup) or ``"mean"`` (masked mean of the token states, how all-MiniLM-L6-v2
            was trained); see :func:`mplib.lab.models.load_encoder`.
        max_train: stratified training subsample size (None: the whole train split).
        max_eval: evaluate on the first ``max_eval`` rows of validation and test (None: all).
        max_length: token truncation length (RT snippets: median 26, 99th percentile 54).
        batch_size: examples per optimizer step, summed over all processes under DDP.
        eval_batch_size: examples per evaluation batch.
        epochs: passes over the training set; ``total_steps = epochs * steps_per_epoch``.
        lr: peak learning rate of the weights (linear warm-up, then linear decay to 0).
        score_lr: peak learning rate of the scores (paper: 1e-2; L0: 1e-1).
        weight_decay: AdamW weight decay of the weights (paper: 0); never on scores.
        warmup_frac: LR warm-up and dense pruning warm-up, as a fraction of ``total_steps``.
        cooldown_frac: final steps at the target sparsity, as a fraction of ``total_steps``.
        freeze_embeddings: do not train the embeddings (the paper's §5 option).
        temperature, alpha_distil, alpha_task: distillation (paper's runs: 2, 0.9, 0.1).
        log_every: steps between history rows (loss, accuracy, scheduled and achieved sparsity).
        eval_every: steps between validation evaluations during training (None: only at the end).
        checkpoint_every: steps between resumable checkpoints (None: no checkpoints).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        threads: ``torch.set_num_threads`` for the run (None: leave torch's default).
        seeds: the seeds a sweep uses when its spec names none.
    """

    name: str
    model: str | None = None
    num_layers: int | None = None
    pooling: str = "cls"
    max_train: int | None = None
    max_eval: int | None = None
    max_length: int = 64
    batch_size: int = 32
    eval_batch_size: int = 128
    epochs: float = 1.0
    lr: float = 1e-4
    score_lr: float = 1e-2
    weight_decay: float = 0.0
    warmup_frac: float = 0.1
    cooldown_frac: float = 0.2
    freeze_embeddings: bool = False
    temperature: float = 2.0
    alpha_distil: float = 0.9
    alpha_task: float = 0.1
    log_every: int = 50
    eval_every: int | None = None
    checkpoint_every: int | None = None
    device: str = "auto"
    threads: int | None = None
    seeds: tuple[int, ...] = (0,)

    def __post_init__(self):
        if not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if not (0 <= self.warmup_frac and 0 <= self.cooldown_frac
                and self.warmup_frac + self.cooldown_frac < 1):
            raise ValueError(
                f"warmup_frac + cooldown_frac must be < 1 (got {self.warmup_frac} + "
                f"{self.cooldown_frac}): no step would be left to prune")
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        for name in ("batch_size", "eval_batch_size", "max_length", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        return d

    def with_overrides(self, **overrides) -> Profile:
        """A copy with some fields changed; unknown names are an error listing the known ones."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown profile field(s) {unknown}; known: {sorted(known)}")
        if "seeds" in overrides:
            overrides["seeds"] = tuple(overrides["seeds"])
        return replace(self, **overrides)


PROFILES: dict[str, Profile] = {
    "ci": Profile(  # ~40 s of one core per run (2 layers, 128 steps of 16, 512 eval rows)
        name="ci", num_layers=2, max_train=1024, max_eval=256, max_length=64, batch_size=16,
        epochs=2, lr=5e-4, freeze_embeddings=True, log_every=8, threads=1, device="cpu",
    ),
    "cpu": Profile(
        name="cpu", num_layers=None, max_train=None, max_eval=None, max_length=64,
        batch_size=32, epochs=1, lr=1e-4, log_every=25, eval_every=None,
        checkpoint_every=100, device="auto",
    ),
    "full": Profile(  # GPU-sized, unmeasured (no GPU was lent): 20 epochs of batch 32 =
        # 5,300 steps, a cubic of 3,710 steps -- over 3x the longest 6-layer CPU run, all of
        # which collapsed (<= 1,113 pruning steps), and still far below the paper's ~40 k.
        name="full", num_layers=None, max_train=None, max_eval=None, max_length=128,
        batch_size=32, epochs=20, lr=5e-5, log_every=50, eval_every=250,
        checkpoint_every=500, device="auto", seeds=(0, 1, 2),
    ),
}
"""The three named profiles; the runs that measured them are in results/recipes/."""


def get_profile(name: str, **overrides) -> Profile:
    """The profile called ``name`` with ``overrides`` applied (a clear error for unknown names)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[name].with_overrides(**overrides) if overrides else PROFILES[name]
