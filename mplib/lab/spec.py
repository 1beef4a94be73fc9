"""What one run is and what its result file is called.

A :class:`RunSpec` is (task, method, keep_ratio / tau / lam, scope, the structured methods'
``head_size`` / ``block_size``, distillation, seed) plus the profile fields the run changes; its
:meth:`~RunSpec.run_id` is the result file's name:
``<profile>-<task>-<method>[-keep<v>][-tau<t>][-lam<l>][-head<d>][-block<r>x<c>][-global][-distil]-seed<s>[+<field><value>...]``.

Used by: :mod:`mplib.lab.runner`, :mod:`mplib.lab.sweeps`, :mod:`mplib.lab.probes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import PruningConfig
from ..methods import METHODS

__all__ = ["NOT_IN_RUN_ID", "RunSpec", "result_path", "task_slug"]

NOT_IN_RUN_ID = ("threads", "device", "checkpoint_every", "log_every", "eval_every",
                 "eval_batch_size", "seeds")
"""Profile fields left out of a run's name, as they change how a run executes, not its result."""

def task_slug(task: str) -> str:
    """A task name safe in file names: a local folder's own name, ``/`` and ``:`` as ``_``."""
    name = Path(task).name if Path(task).exists() else task
    return name.replace("/", "_").replace(":", "_")


@dataclass
class RunSpec:
    """What one run prunes and how (the profile says at what scale).

    Attributes:
        task: ``"rt"``, ``"bbc"`` or any name :func:`mplib.lab.data.load_task` accepts.
        method: a :data:`mplib.METHODS` name, or ``"dense"`` (fine-tuning, no pruning).
        keep_ratio, tau, lam, scope: as in :class:`mplib.PruningConfig`.
        head_size, block_size: the structured methods' options, as in
            :class:`mplib.PruningConfig` (``head_movement`` needs ``head_size``: 32 for
            all-MiniLM-L6-v2; ``block_movement`` needs ``block_size``).
        distill: distil from the cached dense teacher (alpha_distil 0.9, alpha_task 0.1, T 2).
        seed: seeds the head, dropout, data order, training subsample and random scores.
        overrides: profile fields changed for this run (e.g. ``{"epochs": 8}``).
    """

    task: str = "rt"
    method: str = "movement"
    keep_ratio: float | None = None
    tau: float | None = None
    lam: float | None = None
    scope: str = "local"
    head_size: int | None = None
    block_size: int | tuple[int, int] | list[int] | None = None
    distill: bool = False
    seed: int = 0
    overrides: dict = field(default_factory=dict)

    def pruning_config(self) -> PruningConfig | None:
        """The validated :class:`mplib.PruningConfig` (None for ``dense``); errors say what is
        wrong."""
        if self.method == "dense":
            given = [k for k in ("keep_ratio", "tau", "lam", "head_size", "block_size")
                     if getattr(self, k) is not None]
            if given or self.scope != "local":
                raise ValueError(f"method 'dense' does not prune, so {given or ['scope']} "
                                 "does not apply")
            return None
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose dense or one of "
                             f"{sorted(METHODS)}")
        block = tuple(self.block_size) if isinstance(self.block_size, list) else self.block_size
        return PruningConfig(method=self.method, keep_ratio=self.keep_ratio, tau=self.tau,
                             lam=self.lam, scope=self.scope, seed=self.seed,
                             head_size=self.head_size, block_size=block)

    def run_id(self, profile_name: str) -> str:
        """The run's name at ``profile_name``, which is also its result file's name."""
        parts = [profile_name, task_slug(self.task), self.method]
        for key in ("keep_ratio", "tau", "lam"):
            v = getattr(self, key)
            if v is not None:
                parts.append(f"{ {'keep_ratio': 'keep'}.get(key, key)}{v:g}")
        if self.head_size is not None:
            parts.append(f"head{self.head_size}")
        if self.block_size is not None:
            b = self.block_size
            parts.append("block" + ("x".join(str(x) for x in b) if isinstance(b, (list, tuple))
                                    else f"{b}x{b}"))
        if self.scope != "local":
            parts.append(self.scope)
        if self.distill:
            parts.append("distil")
        parts.append(f"seed{self.seed}")
        rid = "-".join(parts)
        for k in sorted(set(self.overrides) - set(NOT_IN_RUN_ID)):
            rid += f"+{k}{_short(self.overrides[k])}"
        return rid


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "_".join(_short(x) for x in v)
    return str(v).replace("/", "_")


def result_path(spec: RunSpec, profile_name: str, output) -> Path:
    return Path(output) / f"{spec.run_id(profile_name)}.json"
