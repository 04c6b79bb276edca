"""Schedules: start a workflow on a cron expression or a fixed interval, once per tick.

`gd.Schedule(Flow, cron="0 3 * * *", tz="Europe/Paris")` or
`gd.Schedule(Flow, every=timedelta(minutes=5))`, given as `Engine(schedules=[...])`. Each
tick starts one instance keyed `"<name>@<tick>"` (the tick in ISO-8601 UTC) across every
engine; `gendurable.maintenance.ticker` does the starting. This module is the definition and
its arithmetic: which instants are ticks. It touches no database.

Cron expressions are read by `cronsim` (the `gendurable[cron]` extra), which also decides what
a tick means on the days a time zone's clocks change: a tick at a wall-clock time that does
not exist that day (02:30 when clocks jump from 02:00 to 03:00) runs once, at the first
minute that exists after it (03:00); a wall-clock time that happens twice (clocks go back)
runs once, at its first occurrence. Expressions with `*` in the minute or hour field tick in
real time instead (every 15 minutes stays every 15 minutes through the change).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .entries import encode_state
from .errors import ConfigError, ValidationError
from .spec import WorkflowSpec

Missed = Literal["skip", "latest", "all"]
"""What a schedule does with ticks that came due while no engine ran it."""

MISSED: tuple[Missed, ...] = ("skip", "latest", "all")

ON_TIME = timedelta(minutes=1)
"""How late a tick may start and still count as on time (not missed): `missed="skip"` runs
a tick no later than this after it came due, and skips the older ones."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
CRON_EXTRA = "pip install 'gendurable[cron]'"


class Schedule:
    """Start `workflow` at each tick of `cron` (in time zone `tz`) or of `every`.

    - `cron`: a cron expression of five fields (minute hour day-of-month month day-of-week)
      or six (seconds first), read by `cronsim` (`pip install 'gendurable[cron]'`); its ticks
      are wall-clock times in `tz` (an IANA zone name, default `"UTC"`).
    - `every`: a whole number of seconds (a `timedelta` of at least one second); ticks are
      the multiples of it since the Unix epoch, in UTC (`every=timedelta(hours=1)` ticks on
      the hour), so that every engine agrees on them. `tz` does not apply.
    - `state`: the start state of each instance, or a callable of the tick (an aware UTC
      `datetime`) that returns it. A value is checked against the workflow's `State` here.
    - `name`: the schedule's name (default: the workflow's); instance keys are
      `"<name>@<tick>"` with the tick as `2030-01-02T02:00:00Z`, reserved for good (every
      status is in the key's scope), so no tick can start twice.
    - `missed`: what to do with ticks that came due while no engine ran the schedule (every
      engine down, or a clock moved past several ticks at once): `"skip"` starts none of
      them (a tick starts only within `ON_TIME` of coming due), `"latest"` (the default)
      starts the most recent one, `"all"` starts each, at most `catch_up` of them (the most
      recent ones).

    A bad value raises `ConfigError` here, before any engine is built.
    """

    __slots__ = ("_zone", "catch_up", "cron", "every", "missed", "name", "spec", "state", "tz")

    def __init__(
        self,
        workflow: Any,
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        tz: str | None = None,
        state: Any = None,
        name: str | None = None,
        missed: Missed = "latest",
        catch_up: int = 100,
    ) -> None:
        spec = getattr(workflow, "spec", None)
        if not isinstance(spec, WorkflowSpec):
            raise ConfigError(
                f"Schedule takes a @gd.workflow class or @gd.job function, got {workflow!r}"
            )
        self.spec = spec
        self.name = _name(spec, name)
        what = f"schedule {self.name!r}"
        if (cron is None) == (every is None):
            raise ConfigError(f"{what}: pass cron= or every=, exactly one of them")
        self.cron = cron
        self.every = every
        self.tz = tz
        self._zone: ZoneInfo | None = None
        if cron is not None:
            self.tz = tz if tz is not None else "UTC"
            self._zone = _zone(what, self.tz)
            _check_cron(what, cron, self._zone)
        else:
            if tz is not None:
                raise ConfigError(
                    f"{what}: tz= applies to cron= schedules; every= ticks are fixed intervals "
                    "since the Unix epoch (use cron= for wall-clock times in a zone)"
                )
            _check_every(what, every)
        if missed not in MISSED:
            raise ConfigError(f"{what}: missed must be 'skip', 'latest' or 'all', got {missed!r}")
        self.missed: Missed = missed
        if isinstance(catch_up, bool) or not isinstance(catch_up, int) or catch_up < 1:
            raise ConfigError(f"{what}: catch_up must be a positive int, got {catch_up!r}")
        self.catch_up = catch_up
        self.state = state
        if not callable(state):
            _check_state(what, spec, state)

    @property
    def workflow(self) -> str:
        """The name of the workflow it starts."""
        return self.spec.name

    def definition(self) -> dict[str, Any]:
        """What the schedules table stores as its `spec`: enough for an engine to tell its
        own definition from another deploy's, and for the command line (which has no code
        and maybe no cron library) to show it, `description` in words included."""
        timing: dict[str, Any] = (
            {"cron": self.cron, "tz": self.tz}
            if self.cron is not None
            else {"every": int(self._every.total_seconds())}
        )
        return {
            **timing,
            "missed": self.missed,
            "catch_up": self.catch_up,
            "description": self.describe(),
        }

    def describe(self) -> str:
        """The schedule in words: `At 03:00 every day (Europe/Paris)`, `every 5 minutes`."""
        if self.cron is not None:
            assert self._zone is not None
            try:
                words = _cron(self.cron, datetime.now(self._zone)).explain()
            except Exception:  # an expression cronsim runs but cannot put into words
                words = f"cron {self.cron!r}"
            return f"{words} ({self.tz})"
        return f"every {_duration_words(self._every)}"

    def key(self, tick: datetime) -> str:
        """The key of the instance started for `tick`: `<name>@2030-01-02T02:00:00Z`."""
        return f"{self.name}@{tick.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"

    def state_for(self, tick: datetime) -> Any:
        """The start state of the instance of `tick` (calls `state` when it is callable)."""
        state = self.state
        if callable(state):
            return state(tick)
        return state

    def next_after(self, after: datetime) -> datetime:
        """The first tick strictly after `after`, in UTC."""
        if self.every is not None:
            return self._every_at(self._every_index(after) + 1)
        for tick in self._forward(after):
            if tick > after:
                return tick
        raise AssertionError("unreachable")  # pragma: no cover

    def due(self, since: datetime, until: datetime, limit: int) -> list[datetime]:
        """The latest `limit` ticks in `[since, until]`, oldest first, in UTC."""
        if since > until:
            return []
        if self.every is not None:
            last = self._every_index(until)
            first = max(self._every_index(since - timedelta(microseconds=1)) + 1, last - limit + 1)
            return [self._every_at(i) for i in range(first, last + 1)]
        found: list[datetime] = []
        for tick in self._backward(until):
            if tick < since or len(found) == limit:
                break
            if tick <= until:
                found.append(tick)
        return found[::-1]

    def count_between(self, since: datetime, until: datetime, cap: int) -> int:
        """How many ticks fall in `[since, until]`, counting up to `cap`."""
        if since > until:
            return 0
        if self.every is not None:
            first = self._every_index(since - timedelta(microseconds=1)) + 1
            return min(cap, max(0, self._every_index(until) - first + 1))
        count = 0
        for tick in self._forward(since - _SECOND):
            if tick > until or count == cap:
                break
            count += tick >= since
        return count

    # -- arithmetic ---------------------------------------------------------------------

    @property
    def _every(self) -> timedelta:
        assert self.every is not None
        return self.every

    def _every_index(self, at: datetime) -> int:
        return (at - _EPOCH) // self._every

    def _every_at(self, index: int) -> datetime:
        return _EPOCH + index * self._every

    def _forward(self, after: datetime) -> Iterator[datetime]:
        assert self.cron is not None
        assert self._zone is not None
        for tick in _cron(self.cron, after.astimezone(self._zone)):
            yield tick.astimezone(UTC)

    def _backward(self, until: datetime) -> Iterator[datetime]:
        # cronsim steps back one second before it looks: start a second later so that a
        # tick at `until` itself is found.
        assert self.cron is not None
        assert self._zone is not None
        start = until.astimezone(self._zone).replace(microsecond=0) + _SECOND
        for tick in _cron(self.cron, start, reverse=True):
            yield tick.astimezone(UTC)

    def __repr__(self) -> str:
        timing = f"cron={self.cron!r}, tz={self.tz!r}" if self.cron else f"every={self.every!r}"
        return f"Schedule({self.workflow}, {timing}, name={self.name!r}, missed={self.missed!r})"


def _cron(expr: str, start: datetime, reverse: bool = False) -> Any:
    from cronsim import CronSim

    return CronSim(expr, start, reverse=reverse)


def _name(spec: WorkflowSpec, name: Any) -> str:
    if name is None:
        return spec.name
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"schedule name must be a non-empty string, got {name!r}")
    if "\x00" in name or len(name.encode()) > 200:
        raise ConfigError(f"schedule name {name!r}: at most 200 bytes, no NUL character")
    return name


def _zone(what: str, tz: Any) -> ZoneInfo:
    if not isinstance(tz, str) or not tz:
        raise ConfigError(f"{what}: tz must be an IANA time zone name, got {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{what}: unknown time zone {tz!r} (an IANA name such as 'Europe/Paris' or 'UTC')"
        ) from None


def _check_cron(what: str, cron: Any, zone: ZoneInfo) -> None:
    if not isinstance(cron, str) or not cron.strip():
        raise ConfigError(f"{what}: cron must be a cron expression string, got {cron!r}")
    try:
        from cronsim import CronSimError
    except ImportError:
        raise ConfigError(
            f"{what}: cron schedules need the cronsim package: {CRON_EXTRA}"
        ) from None
    try:
        first = _cron(cron, datetime.now(zone))
        next(first)
    except CronSimError as exc:
        raise ConfigError(f"{what}: bad cron expression {cron!r}: {exc}") from None
    except StopIteration:
        raise ConfigError(f"{what}: cron expression {cron!r} never ticks") from None


def _check_every(what: str, every: Any) -> None:
    if not isinstance(every, timedelta) or every < _SECOND:
        raise ConfigError(f"{what}: every must be a timedelta of at least 1 second, got {every!r}")
    if every % _SECOND:
        raise ConfigError(f"{what}: every must be a whole number of seconds, got {every!r}")


def _check_state(what: str, spec: WorkflowSpec, state: Any) -> None:
    try:
        encode_state(spec, state)
    except ValidationError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def _duration_words(every: timedelta) -> str:
    seconds = int(every.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0:
            n = seconds // size
            return f"{unit}" if n == 1 else f"{n} {unit}s"
    raise AssertionError("unreachable")  # pragma: no cover
