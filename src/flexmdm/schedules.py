"""Noise schedules: the insertion schedule α and the unmasking schedule β.

A schedule is a monotone map a: [0, 1] -> [0, 1] with a(0) = 0 and a(1) = 1 (to float
precision for the bounded-rate one). It provides everything the interpolant, the losses and
the samplers need:

* ``value(t)``      a(t)
* ``derivative(t)`` a'(t)
* ``rate(t)``       the rate factor κ(t) = a'(t) / (1 - a(t)), which diverges at t = 1 for
                    every schedule with a(1) = 1 exactly;
* ``inverse(a)``    t such that a(t) = a;
* ``survival(t)``   1 - a(t), and ``inverse_survival(s)`` the t with 1 - a(t) = s: schedules
                    that know 1 - a(t) in closed form return it without the cancellation of
                    1 - a(t) near a = 1 (for the power-decay schedule with p = 50, 1 - a(t)
                    is 1e-15 at t = 0.5 but 1 - value(t) is 0 in float64 from t ≈ 0.53);
* ``sample_after(t0, u)`` inverse-CDF sampling of a time T >= t0 with density
                    a'(t) / (1 - a(t0)) on [t0, 1] (the unmasking time given the insertion time).

All methods take and return tensors of any shape, elementwise.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "Schedule",
    "LinearSchedule",
    "PolynomialSchedule",
    "PowerDecaySchedule",
    "CosineSchedule",
    "GeometricSchedule",
    "schedule_from_config",
]


class Schedule(ABC):
    """A monotone schedule a(t) on [0, 1]; see the module docstring."""

    name: str

    @abstractmethod
    def value(self, t: Tensor) -> Tensor:
        """a(t)."""

    @abstractmethod
    def derivative(self, t: Tensor) -> Tensor:
        """a'(t)."""

    @abstractmethod
    def inverse(self, a: Tensor) -> Tensor:
        """The time t with a(t) = a, for a in [0, 1]."""

    def survival(self, t: Tensor) -> Tensor:
        """1 - a(t): the probability that an event with CDF a has not happened by t."""
        return 1.0 - self.value(t)

    def inverse_survival(self, s: Tensor) -> Tensor:
        """The time t with 1 - a(t) = s, for s in [0, 1]."""
        return self.inverse(1.0 - s)

    def rate(self, t: Tensor) -> Tensor:
        """κ(t) = a'(t) / (1 - a(t)); +inf where a(t) = 1."""
        return self.derivative(t) / self.survival(t)

    def sample_after(self, t0: Tensor, u: Tensor) -> Tensor:
        """Time T >= t0 with density a'(T) / (1 - a(t0)) on [t0, 1], from uniforms ``u``.

        Inverse CDF: a(T) = a(t0) + u · (1 - a(t0)), i.e. 1 - a(T) = (1 - u) · (1 - a(t0)), solved through
        the survival so that a steep schedule keeps its precision where a(t0) rounds to 1.
        """
        return torch.maximum(self.inverse_survival((1.0 - u) * self.survival(t0)), t0)

    def sample(self, u: Tensor) -> Tensor:
        """Time T with density a'(T) on [0, 1] (i.e. ``sample_after(0, u)``)."""
        return self.inverse(u)

    def to_config(self) -> dict[str, Any]:
        """JSON-serialisable description; inverse of :func:`schedule_from_config`."""
        return {"name": self.name, **asdict(self)}  # type: ignore[call-overload]


@dataclass(frozen=True)
class LinearSchedule(Schedule):
    """a(t) = t, κ(t) = 1 / (1 - t). The paper's experiments use this for both α and β."""

    name = "linear"

    def value(self, t: Tensor) -> Tensor:
        return t.clone()

    def derivative(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def inverse(self, a: Tensor) -> Tensor:
        return a.clamp(0.0, 1.0)


def _check_power(schedule: PolynomialSchedule | PowerDecaySchedule) -> None:
    if not (schedule.power > 0 and math.isfinite(schedule.power)):
        raise ValueError(f"{type(schedule).__name__} needs a finite power > 0, got {schedule.power}")


@dataclass(frozen=True)
class PolynomialSchedule(Schedule):
    """a(t) = t^p with p > 0 (p = 2 is the paper's t²)."""

    power: float = 2.0
    name = "polynomial"

    def __post_init__(self) -> None:
        _check_power(self)

    def value(self, t: Tensor) -> Tensor:
        return t.clamp(min=0.0) ** self.power

    def derivative(self, t: Tensor) -> Tensor:
        return self.power * t.clamp(min=0.0) ** (self.power - 1.0)

    def inverse(self, a: Tensor) -> Tensor:
        return a.clamp(0.0, 1.0) ** (1.0 / self.power)


@dataclass(frozen=True)
class PowerDecaySchedule(Schedule):
    """1 - a(t) = (1 - t)^p with p > 0: for p > 1 most of the change comes early.

    Its rate κ(t) = p / (1 - t) is p times the linear one, finite at t = 0. As an insertion
    schedule with p > 1 a sequence reaches most of its length while most of it is still masked,
    so the unmasking head sees states close to an MDM's at known length.
    """

    power: float = 2.0
    name = "power_decay"

    def __post_init__(self) -> None:
        _check_power(self)

    def value(self, t: Tensor) -> Tensor:
        return 1.0 - (1.0 - t).clamp(min=0.0) ** self.power

    def derivative(self, t: Tensor) -> Tensor:
        return self.power * (1.0 - t).clamp(min=0.0) ** (self.power - 1.0)

    def survival(self, t: Tensor) -> Tensor:
        return (1.0 - t).clamp(min=0.0) ** self.power

    def inverse_survival(self, s: Tensor) -> Tensor:
        return 1.0 - s.clamp(0.0, 1.0) ** (1.0 / self.power)

    def rate(self, t: Tensor) -> Tensor:
        # κ = p / (1 - t): exact where 1 - a(t) underflows to 0.
        return self.power / (1.0 - t)

    def inverse(self, a: Tensor) -> Tensor:
        return self.inverse_survival(1.0 - a)


@dataclass(frozen=True)
class CosineSchedule(Schedule):
    """a(t) = 1 - cos(πt/2): slow at first, fast near the end."""

    name = "cosine"

    def value(self, t: Tensor) -> Tensor:
        return 1.0 - torch.cos(0.5 * math.pi * t)

    def derivative(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def inverse(self, a: Tensor) -> Tensor:
        return torch.acos((1.0 - a).clamp(0.0, 1.0)) * (2.0 / math.pi)

    def rate(self, t: Tensor) -> Tensor:
        # a'/(1-a) = (π/2) tan(πt/2): exact where 1 - a(t) underflows to 0.
        return 0.5 * math.pi * torch.tan(0.5 * math.pi * t)


@dataclass(frozen=True)
class GeometricSchedule(Schedule):
    """Bounded-rate schedule: 1 - a(t) = exp(-(σ(t) - σ_min)) with σ(t) = σ_min^(1-t) σ_max^t.

    Its rate κ(t) = σ(t) · ln(σ_max / σ_min) stays finite on the whole of [0, 1] (at most
    σ_max ln(σ_max/σ_min)), at the price of a(1) = 1 - exp(-(σ_max - σ_min)), which is 1 to
    float32 precision for the defaults (1 - e^-19.99). Samplers fill whatever is left at t = 1.
    """

    sigma_min: float = 0.01
    sigma_max: float = 20.0
    name = "geometric"

    def __post_init__(self) -> None:
        if not (0 < self.sigma_min < self.sigma_max and math.isfinite(self.sigma_max)):
            raise ValueError(
                "GeometricSchedule needs 0 < sigma_min < sigma_max < inf, "
                f"got sigma_min={self.sigma_min}, sigma_max={self.sigma_max}"
            )

    def _sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min ** (1.0 - t) * self.sigma_max**t

    def value(self, t: Tensor) -> Tensor:
        return -torch.expm1(-(self._sigma(t) - self.sigma_min))

    def derivative(self, t: Tensor) -> Tensor:
        log_ratio = math.log(self.sigma_max / self.sigma_min)
        return self._sigma(t) * log_ratio * torch.exp(-(self._sigma(t) - self.sigma_min))

    def rate(self, t: Tensor) -> Tensor:
        return self._sigma(t) * math.log(self.sigma_max / self.sigma_min)

    def inverse(self, a: Tensor) -> Tensor:
        a_max = -math.expm1(-(self.sigma_max - self.sigma_min))
        sigma = self.sigma_min - torch.log1p(-a.clamp(0.0, a_max))
        t = torch.log(sigma / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)
        return torch.where(a >= a_max, torch.ones_like(t), t.clamp(0.0, 1.0))


_SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls
    for cls in (LinearSchedule, PolynomialSchedule, PowerDecaySchedule, CosineSchedule, GeometricSchedule)
}


def schedule_from_config(config: dict[str, Any] | str) -> Schedule:
    """Build a schedule from ``{"name": ..., **params}`` (or just its name).

    Raises:
        ValueError: unknown name or parameter, naming the valid ones.
    """
    if isinstance(config, str):
        config = {"name": config}
    params = dict(config)
    name = params.pop("name", None)
    if name not in _SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(_SCHEDULES)}")
    cls = _SCHEDULES[name]
    valid = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    unknown = set(params) - valid
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {sorted(unknown)} for schedule {name!r}; valid: {sorted(valid)}"
        )
    return cls(**params)
