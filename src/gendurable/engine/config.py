"""The engine's options as one frozen value, checked once when the engine is built.

`EngineConfig.build(...)` takes the keyword arguments of `gd.Engine(...)` and checks every
one of them, for its type and its range, before anything connects: a bad option raises
`ConfigError` with one line naming the option, the value given and what is allowed. The
engine, and every part it composes, reads its options from the value `build` returns; nothing
changes it afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Literal

from ..clock import Clock, SystemClock
from ..db.connect import check_dsn
from ..errors import ConfigError
from ..maintenance.collector import CONFIG_TTL
from ..rate_configs import RateConfigs
from ..schedule import Schedule
from ..spec import WorkflowSpec
from ..sql import quote_schema

MAX_GC_INTERVAL = CONFIG_TTL / 24
"""The longest `gc_interval`: engines refresh their rate-limit configs every interval, and the
collector removes configs no engine refreshed for `CONFIG_TTL`."""

_ZERO = timedelta(0)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The validated options of one engine (see `gd.Engine` for what each one means).

    Beyond the options as given: `specs` are the workflows by name, `rate_configs` the limits
    the engine writes (its `rate_limits` and its workflows' inline ones), `leases` each
    workflow's lease (its own `lease=`, else the engine's), `migrate` is True for `"auto"`,
    `pool_size` and `local_starts` hold their defaults when not given.
    """

    dsn: str | None
    name: str
    schema: str
    specs: Mapping[str, WorkflowSpec]
    queues: Mapping[str, int]
    rate_configs: RateConfigs
    schedules: tuple[Schedule, ...]
    clock: Clock
    leases: Mapping[str, timedelta]
    poll_interval: timedelta
    min_demand: int
    reap_interval: timedelta
    gc_retention: timedelta | None
    gc_interval: timedelta
    gc_batch: int
    migrate: bool
    prepare: bool
    pool_size: int
    statement_timeout: timedelta
    max_payload_bytes: int
    local_starts: bool
    listen: bool

    @classmethod
    def build(
        cls,
        dsn: str | None,
        *,
        workflows: Sequence[Any],
        name: str,
        schema: str,
        queues: Mapping[str, int] | None,
        rate_limits: Mapping[str, Any] | None,
        schedules: Sequence[Schedule] | None,
        clock: Clock | None,
        lease: timedelta,
        poll_interval: timedelta,
        min_demand: int,
        reap_interval: timedelta,
        gc_retention: timedelta | None,
        migrate: Literal["auto"] | bool,
        prepare: bool,
        pool_size: int | None,
        statement_timeout: timedelta,
        gc_interval: timedelta,
        gc_batch: int,
        max_payload_bytes: int,
        local_starts: bool | None,
        listen: bool,
    ) -> EngineConfig:
        """Check every option; the frozen configuration, or `ConfigError` for the first bad one."""
        if dsn is not None:
            check_dsn(dsn)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"engine name must be a non-empty string, got {name!r}")
        quote_schema(schema)
        checked_queues = _queues(queues)
        specs = _specs(workflows)
        clock = _clock(clock)
        lease = _duration("lease", lease)
        if not (migrate == "auto" or migrate is True or migrate is False):
            raise ConfigError(f"migrate must be 'auto', True or False, got {migrate!r}")
        if gc_retention is not None and (
            not isinstance(gc_retention, timedelta) or gc_retention < _ZERO
        ):
            raise ConfigError(f"gc_retention must be None or a duration >= 0, got {gc_retention!r}")
        if not isinstance(gc_interval, timedelta) or not _ZERO < gc_interval <= MAX_GC_INTERVAL:
            raise ConfigError(
                f"gc_interval must be a positive duration of at most {MAX_GC_INTERVAL} (engines "
                "refresh their rate-limit configs every gc_interval, and configs no engine "
                f"refreshed for {CONFIG_TTL} are removed), got {gc_interval!r}"
            )
        if pool_size is None:
            pool_size = min(20, max(4, sum(checked_queues.values()) + 2))
        return cls(
            dsn=dsn,
            name=name,
            schema=schema,
            specs=specs,
            queues=checked_queues,
            rate_configs=RateConfigs.build(rate_limits, specs, check_steps=bool(checked_queues)),
            schedules=_schedules(schedules, specs),
            clock=clock,
            leases=MappingProxyType({n: spec.lease or lease for n, spec in specs.items()}),
            poll_interval=_duration("poll_interval", poll_interval),
            min_demand=_count("min_demand", min_demand),
            reap_interval=_duration("reap_interval", reap_interval),
            gc_retention=gc_retention,
            gc_interval=gc_interval,
            gc_batch=_count("gc_batch", gc_batch),
            migrate=migrate is not False,
            prepare=_flag("prepare", prepare),
            pool_size=_count("pool_size", pool_size),
            statement_timeout=_duration("statement_timeout", statement_timeout),
            max_payload_bytes=_count("max_payload_bytes", max_payload_bytes),
            # Under a manual clock, work starts only through claims (and so as drain() drives it).
            local_starts=(
                not clock.manual if local_starts is None else _flag("local_starts", local_starts)
            ),
            listen=_flag("listen", listen),
        )

    @property
    def shortest_lease(self) -> timedelta:
        """The shortest lease of the workflows served."""
        return min(self.leases.values())

    @property
    def heartbeat(self) -> timedelta:
        """How often claims are extended and the node refreshed: a third of the shortest lease."""
        return self.shortest_lease / 3

    def demand(self, queue: str) -> int:
        """The free slots `queue`'s scheduler waits for: `min_demand`, clamped to its
        concurrency (so that a queue smaller than `min_demand` still claims)."""
        return min(self.min_demand, self.queues[queue])


def _count(option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option} must be a positive int, got {value!r}")
    return value


def _duration(option: str, value: Any) -> timedelta:
    if not isinstance(value, timedelta) or value <= _ZERO:
        raise ConfigError(f"{option} must be a positive duration (a timedelta), got {value!r}")
    return value


def _flag(option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{option} must be True or False, got {value!r}")
    return value


def _queues(queues: Any) -> Mapping[str, int]:
    if queues is None:
        return MappingProxyType({})
    if not isinstance(queues, Mapping):
        raise ConfigError(f"queues must be a mapping of queue names to concurrency, got {queues!r}")
    for queue, concurrency in queues.items():
        if not isinstance(queue, str) or not queue:
            raise ConfigError(f"queues: names must be non-empty strings, got {queue!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(
                f"queue {queue!r}: concurrency must be a positive int, got {concurrency!r}"
            )
    return MappingProxyType(dict(queues))


def _clock(clock: Any) -> Clock:
    if clock is None:
        return SystemClock()
    if not callable(getattr(clock, "now", None)) or not isinstance(
        getattr(clock, "manual", None), bool
    ):
        raise ConfigError(
            f"clock must be a gd.Clock (gd.SystemClock() or gd.ManualClock()), got {clock!r}"
        )
    return clock  # type: ignore[no-any-return]


def _schedules(schedules: Any, specs: Mapping[str, WorkflowSpec]) -> tuple[Schedule, ...]:
    if schedules is None:
        return ()
    if isinstance(schedules, str | bytes | Mapping | Schedule) or not isinstance(
        schedules, Iterable
    ):
        raise ConfigError(f"schedules must be a list of gd.Schedule(...), got {schedules!r}")
    checked: dict[str, Schedule] = {}
    for schedule in schedules:
        if not isinstance(schedule, Schedule):
            raise ConfigError(f"schedules must hold gd.Schedule(...) values, got {schedule!r}")
        if specs.get(schedule.workflow) is not schedule.spec:
            raise ConfigError(
                f"schedule {schedule.name!r} starts workflow {schedule.workflow!r}, which is "
                "not among this engine's workflows=[...]; add it there"
            )
        if schedule.name in checked:
            raise ConfigError(
                f"two schedules are named {schedule.name!r} (a schedule's name defaults to its "
                "workflow's); give each schedule of one workflow its own name="
            )
        checked[schedule.name] = schedule
    return tuple(checked.values())


def _specs(workflows: Any) -> Mapping[str, WorkflowSpec]:
    if isinstance(workflows, str | bytes | Mapping) or not isinstance(workflows, Iterable):
        raise ConfigError(
            f"workflows must be a list of @gd.workflow classes and @gd.job functions, "
            f"got {workflows!r}"
        )
    specs: dict[str, WorkflowSpec] = {}
    for wf in workflows:
        spec = getattr(wf, "spec", None)
        if not isinstance(spec, WorkflowSpec):
            raise ConfigError(
                f"{wf!r} is not a workflow: decorate the class with @gd.workflow "
                "or the function with @gd.job"
            )
        if spec.name in specs and specs[spec.name] is not spec:
            raise ConfigError(f"two workflows are named {spec.name!r}; give one a name=")
        specs[spec.name] = spec
    if not specs:
        raise ConfigError("an engine needs at least one workflow in workflows=[...]")
    return MappingProxyType(specs)
