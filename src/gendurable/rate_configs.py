"""The rate limits one engine configures: a frozen value, checked when the engine is built.

An engine configures the limits it is given (`Engine(rate_limits=...)`) and the inline limits
of the workflows it serves (`@gd.step(rate_limit=gd.Limit(...))`, named
`"<workflow>.<step>"`). The engine writes them to `rate_configs` when it starts
(`engine/rate_config.py`); the collector refreshes them on every run, so that a config no
running engine holds is recognised by age and removed (`maintenance/collector.py`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any, TypedDict

from .errors import ConfigError
from .limit import Limit
from .spec import WorkflowSpec

_INT4_MAX = 2**31 - 1
MS = timedelta(milliseconds=1)
"""The unit of `per` in the table (`per_ms`)."""


class ConfigColumns(TypedDict):
    """Limits as the parallel arrays the `rate_config_*` statements take, by parameter."""

    names: list[str]
    allowed: list[int]
    per_ms: list[int]
    burst: list[int]


@dataclass(frozen=True, slots=True)
class RateConfigs:
    """The limits one engine writes, by name, as the table stores them."""

    limits: Mapping[str, Limit]

    @classmethod
    def build(
        cls,
        given: Mapping[str, Any] | None,
        specs: Mapping[str, WorkflowSpec],
        *,
        check_steps: bool,
    ) -> RateConfigs:
        """Merge `given` with the workflows' inline limits; `ConfigError` when anything is off.

        With `check_steps` (an engine that runs queues), every step's named limit must be
        configured and its weight must fit the limit's burst: a step that could never be
        granted would stall its rows.
        """
        if given is not None and not isinstance(given, Mapping):
            raise ConfigError(f"rate_limits must be a mapping of names to gd.Limit, got {given!r}")
        limits: dict[str, Limit] = {}
        for name, limit in (given or {}).items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"rate_limits: names must be non-empty strings, got {name!r}")
            if not isinstance(limit, Limit):
                raise ConfigError(f"rate limit {name!r}: expected a gd.Limit, got {limit!r}")
            _check_storable(f"rate limit {name!r}", limit)
            limits[name] = limit
        for spec in specs.values():
            for name, limit in spec.rate_limits.items():
                if name in limits and limits[name] != limit:
                    raise ConfigError(
                        f"rate limit {name!r} is both a step's inline limit ({_show(limit)}) "
                        f"and in rate_limits ({_show(limits[name])}); keep one of them"
                    )
                _check_storable(f"rate limit {name!r} (inline)", limit)
                limits[name] = limit
        if check_steps:
            for spec in specs.values():
                _check_steps(spec, limits)
        return cls(MappingProxyType(limits))

    def columns(self) -> ConfigColumns:
        """Parallel arrays (names, allowed, per_ms, burst) in the engine's order.

        The statements sort them by name on the server: the order given here is irrelevant.
        """
        names = list(self.limits)
        return ConfigColumns(
            names=names,
            allowed=[self.limits[n].allowed for n in names],
            per_ms=[self.limits[n].per // MS for n in names],
            burst=[self.limits[n].capacity for n in names],
        )


def _check_storable(where: str, limit: Limit) -> None:
    if limit.per % MS:
        raise ConfigError(f"{where}: per must be a whole number of milliseconds, got {limit.per}")
    if limit.allowed > _INT4_MAX or limit.capacity > _INT4_MAX:
        raise ConfigError(f"{where}: allowed and burst must be at most {_INT4_MAX}")


def _check_steps(spec: WorkflowSpec, limits: Mapping[str, Limit]) -> None:
    for step in spec.steps.values():
        if step.rate_limit is None:
            continue
        at = f"workflow {spec.name!r}, step {step.name!r}"
        limit = limits.get(step.rate_limit)
        if limit is None:
            close = difflib.get_close_matches(step.rate_limit, list(limits), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{at} uses rate limit {step.rate_limit!r}, which this engine does not "
                f"configure{hint}: add it to Engine(rate_limits={{{step.rate_limit!r}: "
                "gd.Limit(...)})"
            )
        if step.weight > limit.capacity:
            raise ConfigError(
                f"{at}: weight {step.weight} is above the burst {limit.capacity} of rate limit "
                f"{step.rate_limit!r}, so it could never run; lower the weight or raise the "
                "limit's burst"
            )


def _show(limit: Limit) -> str:
    return f"allowed={limit.allowed} per={limit.per} burst={limit.capacity}"
