"""`gd.BlockedBy` reads as one sentence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

import gendurable as gd
from gendurable.blocked import REASONS

DEADLINE = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("blocked", "sentence"),
    [
        (
            gd.BlockedBy("awaiting", DEADLINE, "approved or rejected"),
            "awaiting approved or rejected until 2026-12-02 10:00 UTC",
        ),
        (gd.BlockedBy("awaiting", None, "approved"), "awaiting approved"),
        (gd.BlockedBy("scheduled", DEADLINE, ""), "scheduled until 2026-12-02 10:00 UTC"),
        (
            gd.BlockedBy("backoff", DEADLINE + timedelta(seconds=5), "attempt 1 of 5 failed: E"),
            "backing off: attempt 1 of 5 failed: E until 2026-12-02 10:00:05 UTC",
        ),
        (gd.BlockedBy("children", None, "2 of 3 pending"), "waiting for children: 2 of 3 pending"),
        (
            gd.BlockedBy("rate_limit", DEADLINE, "bucket 'bank'"),
            "rate-limited: bucket 'bank' until 2026-12-02 10:00 UTC",
        ),
        (
            gd.BlockedBy("concurrency", None, "concurrency key 'k' is held by instance 7"),
            "serialized: concurrency key 'k' is held by instance 7",
        ),
        (
            gd.BlockedBy("unknown", None, "no live engine knows workflow 'x'"),
            "unknown: no live engine knows workflow 'x'",
        ),
        (
            gd.BlockedBy("queue", None, "no live engine serves queue 'orders'"),
            "queued: no live engine serves queue 'orders'",
        ),
        (
            gd.BlockedBy("paused", None, "queue 'mail' since 2026-12-02 10:00:00 UTC by ops"),
            "paused: queue 'mail' since 2026-12-02 10:00:00 UTC by ops",
        ),
    ],
)
def test_blocked_by_str_is_one_sentence(blocked: gd.BlockedBy, sentence: str) -> None:
    assert str(blocked) == sentence


def test_blocked_by_until_is_shown_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    blocked = gd.BlockedBy("scheduled", datetime(2026, 12, 2, 11, 0, 30, 250, tzinfo=paris), "")

    assert str(blocked) == "scheduled until 2026-12-02 10:00:30 UTC"


def test_blocked_by_is_a_frozen_value() -> None:
    blocked = gd.BlockedBy("queue", None, "x")

    assert blocked == gd.BlockedBy("queue", None, "x")
    assert hash(blocked) == hash(gd.BlockedBy("queue", None, "x"))
    with pytest.raises(AttributeError):
        blocked.reason = "unknown"  # type: ignore[misc]


def test_blocked_by_reasons_are_the_documented_nine() -> None:
    assert REASONS == (
        "scheduled", "backoff", "awaiting", "children", "rate_limit", "concurrency", "unknown",
        "queue", "paused",
    )  # fmt: skip
