"""The group commit's batching, without a database: a flush that answers as the statement
would (committed ids, busy ids) and records what it was sent."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence, Set
from typing import Any

from gendurable.engine.group_commit import STALE, BatchItem, GroupCommit


class Statement:
    """Answers each flush from a script: per call, the ids that are busy."""

    def __init__(self, *busy: set[int]) -> None:
        self.busy = list(busy)
        self.sent: list[list[int]] = []

    async def __call__(self, items: Sequence[BatchItem]) -> tuple[Mapping[int, Any], Set[int]]:
        ids = [item.id for item in items]
        self.sent.append(ids)
        busy = self.busy.pop(0) if self.busy else set()
        return {id: None for id in ids if id not in busy and id != 3}, busy


async def test_group_commit_sends_a_busy_outcome_again_and_drops_only_a_stale_one() -> None:
    # 1 is busy on the first flush (someone held its row), 3 is stale (its guard failed).
    statement = Statement({1})
    group = GroupCommit(statement)

    results = await asyncio.gather(
        *(group.submit(BatchItem(id, "w#1", "finish", status="done")) for id in (1, 2, 3))
    )

    assert results == [None, None, STALE]
    assert statement.sent == [[1, 2, 3], [1]]


async def test_group_commit_sends_two_outcomes_of_one_instance_in_different_batches() -> None:
    # A claim lost during an outage and the claim that took the instance over, both here:
    # the statement answers by instance, so each goes in a batch of its own.
    statement = Statement()
    group = GroupCommit(statement, max_in_flight=1)

    await asyncio.gather(
        group.submit(BatchItem(1, "w#1", "finish", status="done")),
        group.submit(BatchItem(2, "w#1", "finish", status="done")),
        group.submit(BatchItem(1, "w#2", "finish", status="done")),
    )

    assert statement.sent == [[1, 2], [1]]


async def test_group_commit_close_ends_a_batch_resent_while_its_row_stays_locked() -> None:
    # Its row is held by someone else for good: the batch is sent again after each pause.
    # The step that submitted it is gone (a stop cancelled it); closing waits its grace,
    # then ends the batch, so nothing of the group commit outlives the engine.
    statement = Statement(*({1} for _ in range(10_000)))
    resent = asyncio.Event()

    async def flush(items: Sequence[BatchItem]) -> tuple[Mapping[int, Any], Set[int]]:
        answer = await statement(items)
        if len(statement.sent) == 2:  # sent, found busy, sent again
            resent.set()
        return answer

    group = GroupCommit(flush)
    step = asyncio.create_task(group.submit(BatchItem(1, "w#1", "finish", status="done")))
    await asyncio.wait_for(resent.wait(), 10)
    step.cancel()

    await group.close(grace=0.01)

    assert [t for t in asyncio.all_tasks() if t.get_name() == "gendurable:commit"] == []
    assert step.cancelled()
