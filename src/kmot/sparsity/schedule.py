"""Pruning schedules: at which training steps the masks update, to what sparsity.

A schedule is a small validated callable ``schedule(step) -> (update, sparsity)``
written with `keras.ops`, so it runs inside a compiled training step on every
backend (``step`` may be a tensor) as well as on plain Python ints.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

from kmot.errors import KmotError

__all__ = ["PruningSchedule", "ConstantSparsity", "PolynomialDecay", "ScaledSparsity", "ScheduleError"]


class ScheduleError(KmotError, ValueError):
    """A pruning schedule was given an invalid value."""


def _number(value: Any, kind: type) -> Any:
    """NumPy scalars (``np.int32(20)``, ``np.float32(0.5)``) as Python numbers; bools
    and everything else unchanged (and then refused by the checks)."""
    if isinstance(value, (bool, np.bool_)):
        return value
    if kind is int and isinstance(value, numbers.Integral):
        return int(value)
    if kind is float and isinstance(value, numbers.Real):
        return float(value)
    return value


def _check_sparsity(name: str, value: Any, cls: str) -> float:
    value = _number(value, float)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ScheduleError(
            f"{cls}: `{name}` must be a number in [0, 1) (the fraction of weights set "
            f"to zero; 1.0 would remove every weight). Received: {name}={value!r}"
        )
    return float(value)


def _check_step(name: str, value: Any, cls: str, *, allow_minus_one: bool = False) -> int:
    value = _number(value, int)
    ok = isinstance(value, int) and not isinstance(value, bool) and (
        value >= 0 or (allow_minus_one and value == -1))
    if not ok:
        extra = " or -1 (never end)" if allow_minus_one else ""
        raise ScheduleError(
            f"{cls}: `{name}` must be an int >= 0{extra}. Received: {name}={value!r}"
        )
    return value


class PruningSchedule:
    """Base class: `__call__(step)` returns ``(update: bool, sparsity: float)``.

    Masks update at `begin_step`, then every `frequency` steps, and at `end_step`
    (so the final sparsity is always reached), never after `end_step`
    (``-1``: no end).
    """

    def __init__(self, *, begin_step: int, end_step: int, frequency: int):
        cls = type(self).__name__
        self.begin_step = _check_step("begin_step", begin_step, cls)
        self.end_step = _check_step("end_step", end_step, cls, allow_minus_one=True)
        frequency = _number(frequency, int)
        if not isinstance(frequency, int) or isinstance(frequency, bool) or frequency < 1:
            raise ScheduleError(
                f"{cls}: `frequency` must be an int >= 1 (steps between mask updates). "
                f"Received: frequency={frequency!r}"
            )
        self.frequency = frequency
        if self.end_step != -1 and self.end_step < self.begin_step:
            raise ScheduleError(
                f"{cls}: `end_step` must be >= `begin_step` (or -1). "
                f"Received: begin_step={begin_step}, end_step={end_step}"
            )

    def sparsity(self, step):
        """The target sparsity at `step` (a float tensor)."""
        raise NotImplementedError

    @property
    def final_sparsity(self) -> float:
        """The sparsity the schedule ends at."""
        raise NotImplementedError

    def __call__(self, step):
        step = ops.cast(step, "int32")
        after_begin = ops.greater_equal(step, self.begin_step)
        on_beat = ops.equal(ops.mod(step - self.begin_step, self.frequency), 0)
        if self.end_step == -1:
            update = ops.logical_and(after_begin, on_beat)
        else:
            in_range = ops.logical_and(after_begin, ops.less_equal(step, self.end_step))
            update = ops.logical_and(
                in_range, ops.logical_or(on_beat, ops.equal(step, self.end_step))
            )
        return update, self.sparsity(step)

    def get_config(self) -> dict[str, Any]:
        return {"begin_step": self.begin_step, "end_step": self.end_step,
                "frequency": self.frequency}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="kmot")
class ConstantSparsity(PruningSchedule):
    """Prunes to one fixed sparsity from `begin_step` on.

    Example:
        >>> schedule = ConstantSparsity(0.5, begin_step=0, frequency=100)
        >>> update, sparsity = schedule(200)
        >>> bool(update), float(sparsity)
        (True, 0.5)
    """

    def __init__(self, target_sparsity: float, begin_step: int = 0, end_step: int = -1,
                 frequency: int = 100):
        self.target_sparsity = _check_sparsity("target_sparsity", target_sparsity, "ConstantSparsity")
        super().__init__(begin_step=begin_step, end_step=end_step, frequency=frequency)

    def sparsity(self, step):
        return ops.convert_to_tensor(self.target_sparsity, "float32")

    @property
    def final_sparsity(self) -> float:
        return self.target_sparsity

    def get_config(self):
        return {"target_sparsity": self.target_sparsity, **super().get_config()}


@keras.saving.register_keras_serializable(package="kmot")
class PolynomialDecay(PruningSchedule):
    """Sparsity rises from `initial_sparsity` to `final_sparsity` along a polynomial.

    ``s(t) = final + (initial - final) * (1 - p)^power`` with ``p`` the fraction
    of [begin_step, end_step] elapsed: fast at first, gentle near the end.

    Example:
        >>> schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=10)
        >>> round(float(schedule(100)[1]), 3)
        0.8
    """

    def __init__(self, initial_sparsity: float, final_sparsity: float, begin_step: int,
                 end_step: int, power: float = 3, frequency: int = 100):
        cls = "PolynomialDecay"
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity, cls)
        self._final = _check_sparsity("final_sparsity", final_sparsity, cls)
        if _number(end_step, int) == -1:
            raise ScheduleError(
                f"{cls}: `end_step` must be a step >= begin_step: the decay needs an end. "
                f"Received: end_step={end_step}"
            )
        power = _number(power, float)
        if isinstance(power, bool) or not isinstance(power, (int, float)) or power <= 0:
            raise ScheduleError(f"{cls}: `power` must be a number > 0. Received: power={power!r}")
        self.power = power
        super().__init__(begin_step=begin_step, end_step=end_step, frequency=frequency)
        span = self.end_step - self.begin_step
        if self.frequency >= span and self.initial_sparsity != self._final:
            # masks update at begin_step and end_step only: no ramp at all
            warnings.warn(
                f"{cls}: frequency={self.frequency} is not less than end_step - begin_step = "
                f"{span}, so the masks update only at steps {self.begin_step} and "
                f"{self.end_step}: sparsity jumps from {self.initial_sparsity:g} to "
                f"{self._final:g} at once. Pass frequency={max(1, span // 10)} (or any "
                f"value < {span}) for a gradual ramp.", UserWarning, stacklevel=2)

    def sparsity(self, step):
        span = max(self.end_step - self.begin_step, 1)
        done = ops.clip(ops.cast(step - self.begin_step, "float32") / span, 0.0, 1.0)
        gap = self.initial_sparsity - self._final
        return self._final + gap * ops.power(1.0 - done, self.power)

    @property
    def final_sparsity(self) -> float:
        return self._final

    def get_config(self):
        return {"initial_sparsity": self.initial_sparsity, "final_sparsity": self.final_sparsity,
                "power": self.power, **super().get_config()}


@keras.saving.register_keras_serializable(package="kmot")
class ScaledSparsity(PruningSchedule):
    """Another schedule's timing with its sparsity scaled by `factor`.

    Used for per-layer sparsity allocation: each layer follows the user's
    schedule towards its own final sparsity.
    """

    def __init__(self, schedule: PruningSchedule, factor: float):
        if not isinstance(schedule, PruningSchedule):
            raise ScheduleError(f"ScaledSparsity wraps a PruningSchedule. Received: {schedule!r}")
        if not 0.0 <= factor * schedule.final_sparsity < 1.0:
            raise ScheduleError(
                "ScaledSparsity: `factor` must keep the final sparsity in [0, 1). "
                f"Received: factor={factor!r} on final_sparsity={schedule.final_sparsity}"
            )
        self.schedule, self.factor = schedule, float(factor)
        super().__init__(begin_step=schedule.begin_step, end_step=schedule.end_step,
                         frequency=schedule.frequency)

    def sparsity(self, step):
        return self.schedule.sparsity(step) * self.factor

    @property
    def final_sparsity(self) -> float:
        return self.schedule.final_sparsity * self.factor

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                "factor": self.factor}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["schedule"]), config["factor"])
