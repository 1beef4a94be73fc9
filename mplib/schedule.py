"""The cubic sparsity schedule with warm-up and cool-down (Zhu & Gupta 2018; paper §3, Eq. 5).

A pure function of ``step`` -- no hidden state, so a resumed run gets the same value::

    v_t = initial                                   if step <= warmup_steps
    v_t = final + (initial - final) * (1 - p)^3     in the pruning phase, where
          p = (step - warmup_steps) / (total_steps - warmup_steps - cooldown_steps)
    v_t = final                                     if step > total_steps - cooldown_steps

This is the form of the authors' code. The paper's printed Eq. (5) has ``t - t_i - t_f`` in the
numerator, which does not start at ``initial`` when pruning begins (paper.md §9, erratum 2).
The cubic removes weights fast while many are redundant and slowly near the target.

Its slope in the pruning phase, with ``N = total_steps - warmup_steps - cooldown_steps``, is
``dv/dt = -3 (initial - final) (1 - p)^2 / N``: three times the linear rate at the first step,
zero at the last.

``v`` is the kept fraction for Top_v methods (1 -> keep_ratio), ``tau`` for soft movement
(0 -> tau), and the penalty weight follows ``lam_t = lam * progress_t`` with progress the same
curve from 0 to 1 (the authors scale lambda by ``v_t / v_final``).

For contrast (not used by any method), the same warm-up / cool-down frame with a straight line,
:func:`linear_schedule` (``final + (initial - final) (1 - p)``), and with a constant *relative*
rate, :func:`exponential_schedule` (``initial * (final / initial)^p``, both values > 0).

Taught in: book/01_masks_and_magnitude.ipynb (plotted); its derivative, the contrasts and the
cool-down in book/07_schedules_and_distillation.ipynb.
"""

from __future__ import annotations


def check_schedule(*, total_steps: int, warmup_steps: int, cooldown_steps: int) -> None:
    """Raise ``ValueError`` unless a pruning phase of at least one step exists."""
    for name, value in (("total_steps", total_steps), ("warmup_steps", warmup_steps),
                        ("cooldown_steps", cooldown_steps)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if warmup_steps + cooldown_steps >= total_steps:
        raise ValueError(
            f"warmup_steps + cooldown_steps = {warmup_steps} + {cooldown_steps} must be smaller "
            f"than total_steps = {total_steps}, or no step is left to prune. Train longer or "
            "shorten the warm-up / cool-down (e.g. 10 % and 20 % of total_steps)"
        )


def cubic_schedule(
    step: int,
    *,
    total_steps: int,
    initial: float,
    final: float,
    warmup_steps: int,
    cooldown_steps: int,
) -> float:
    """Value of the cubic schedule at ``step`` (see the module docstring for the formula)."""
    check_schedule(
        total_steps=total_steps, warmup_steps=warmup_steps, cooldown_steps=cooldown_steps
    )
    if step <= warmup_steps:
        return float(initial)
    if step > total_steps - cooldown_steps:
        return float(final)
    p = (step - warmup_steps) / (total_steps - warmup_steps - cooldown_steps)
    return float(final + (initial - final) * (1.0 - p) ** 3)


def progress(step: int, *, total_steps: int, warmup_steps: int, cooldown_steps: int) -> float:
    """The same curve from 0 to 1: ``1 - (1 - p)^3`` (0 in warm-up, 1 in cool-down)."""
    return cubic_schedule(step, total_steps=total_steps, initial=0.0, final=1.0,
                          warmup_steps=warmup_steps, cooldown_steps=cooldown_steps)


def linear_schedule(
    step: int,
    *,
    total_steps: int,
    initial: float,
    final: float,
    warmup_steps: int,
    cooldown_steps: int,
) -> float:
    """Straight line from ``initial`` to ``final`` in the pruning phase (same plateaus as the
    cubic): ``final + (initial - final) * (1 - p)``. For contrast with :func:`cubic_schedule`."""
    check_schedule(
        total_steps=total_steps, warmup_steps=warmup_steps, cooldown_steps=cooldown_steps
    )
    if step <= warmup_steps:
        return float(initial)
    if step > total_steps - cooldown_steps:
        return float(final)
    p = (step - warmup_steps) / (total_steps - warmup_steps - cooldown_steps)
    return float(final + (initial - final) * (1.0 - p))


def exponential_schedule(
    step: int,
    *,
    total_steps: int,
    initial: float,
    final: float,
    warmup_steps: int,
    cooldown_steps: int,
) -> float:
    """Geometric interpolation ``initial * (final / initial)^p`` in the pruning phase (same
    plateaus as the cubic): every step multiplies the value by the same factor, so it removes
    the same *fraction of what is left*. Needs ``initial > 0`` and ``final > 0``."""
    check_schedule(
        total_steps=total_steps, warmup_steps=warmup_steps, cooldown_steps=cooldown_steps
    )
    if not (initial > 0 and final > 0):  # also catches NaN
        raise ValueError(
            f"exponential_schedule interpolates geometrically, so initial and final must both "
            f"be > 0 (got initial={initial}, final={final}); for a value that starts at 0, "
            "such as tau or lambda, use cubic_schedule or linear_schedule"
        )
    if step <= warmup_steps:
        return float(initial)
    if step > total_steps - cooldown_steps:
        return float(final)
    p = (step - warmup_steps) / (total_steps - warmup_steps - cooldown_steps)
    return float(initial * (final / initial) ** p)
