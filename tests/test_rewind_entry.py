"""What a rewind writes, from the workflow's code (`rewind.entry_by_code`), and the pieces of
bulk runs that need no database: durations, the report's words."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
import pytest

import gendurable as gd
from gendurable.bulk import CANCEL, RETRY, BulkReport, acted_on
from gendurable.durations import parse_duration
from gendurable.entries import StepLimit
from gendurable.errors import ValidationError
from gendurable.rewind import KEEP, Entry, entry_by_code


def _zone(state: Any) -> str:
    return str(state.zone)


@gd.workflow(name="unit.rewound", max_attempts=2, version=3)
class Rewound:
    class State(msgspec.Struct):
        zone: str
        n: int = 0

    @gd.step(start=True)
    async def first(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.zoned)

    @gd.step(max_attempts=6, rate_limit=gd.Limit(5, per=timedelta(seconds=1)), partition=_zone,
             weight=2)  # fmt: skip
    async def zoned(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    @gd.upgrade(from_version=1)
    def one(self, state: Any) -> Any:
        return state

    @gd.upgrade(from_version=2)
    def two(self, state: Any) -> Any:
        return state


SPEC = Rewound.spec  # type: ignore[attr-defined]
LIMIT = SPEC.steps["zoned"].rate_limit


def test_entry_by_code_takes_the_steps_attempts_and_limit_with_a_new_state() -> None:
    entry = entry_by_code(SPEC, "zoned", {"zone": "eu", "n": 4})

    assert entry == Entry("zoned", b'{"zone":"eu","n":4}', 3, 6, StepLimit(LIMIT, "eu", 2))


def test_entry_by_code_keeps_the_stored_state_and_partitions_by_it() -> None:
    kept = entry_by_code(SPEC, "zoned", KEEP, stored_state=b'{"zone":"us"}', stored_version=3)
    plain = entry_by_code(SPEC, "first", KEEP, stored_state=b'{"zone":"us"}', stored_version=1)

    assert kept == Entry("zoned", None, None, 6, StepLimit(LIMIT, "us", 2))
    assert plain == Entry("first", None, None, 2, StepLimit())


def test_entry_by_code_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValidationError, match=r"no step 'zonde'; did you mean 'zoned'\?"):
        entry_by_code(SPEC, "zonde")
    with pytest.raises(ValidationError, match="Expected `str`, got `int`"):
        entry_by_code(SPEC, "first", {"zone": 1})
    with pytest.raises(ValidationError, match="stored state is of version 1, not this code's 3"):
        entry_by_code(SPEC, "zoned", KEEP, stored_state=b'{"zone":"us"}', stored_version=1)


@pytest.mark.parametrize(
    ("text", "span"),
    [("90s", timedelta(seconds=90)), ("2h", timedelta(hours=2)), ("1d12h", timedelta(hours=36)),
     ("1W", timedelta(weeks=1)), (" 30m ", timedelta(minutes=30))],
)  # fmt: skip
def test_parse_duration_reads_numbers_with_units(text: str, span: timedelta) -> None:
    assert parse_duration(text) == span


@pytest.mark.parametrize("text", ["", "2", "h", "2 h", "2x", "-1h", "1.5h", "99999999999d"])
def test_parse_duration_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|longer than 100 years"):
        parse_duration(text)


def test_bulk_report_in_words_and_json() -> None:
    report = BulkReport(CANCEL, matched=5, acted=3, descendants_cancelled=2)
    report.skip("not_live", 7)
    report.skip("busy", 9)

    assert report.summary() == (
        "5 matched, 3 cancelled (and 2 live descendants), 2 skipped (1 held by another "
        "transaction throughout, 1 no longer live)"
    )
    assert report.as_json() == {
        "action": "cancel", "matched": 5, "cancelled": 3, "descendants_cancelled": 2,
        "skipped": {"busy": 1, "not_live": 1}, "skipped_ids": {"busy": [9], "not_live": [7]},
        "finished": False,
    }  # fmt: skip


def test_bulk_acts_on_failed_rows_for_a_retry_and_live_ones_for_a_cancel() -> None:
    assert acted_on(RETRY, ()) == ("failed",)
    assert acted_on(RETRY, ("failed", "done")) == ("failed",)
    assert acted_on(RETRY, ("done",)) == ()
    assert acted_on(CANCEL, ()) == ("available", "executing", "awaiting", "waiting")
    assert acted_on(CANCEL, ("awaiting", "failed")) == ("awaiting",)
