"""Mutation run: delete (or weaken) one guard at a time and name the test that fails.

    python bench/mutants.py [--only ID,ID] [--all] [--list] [--check] [--dsn DSN]

Every guard of the named statements (`src/gendurable/sql/*.sql`, the schema's functions
and indexes), of `decide()` and of the group commit's resending is listed in `MUTANTS` with
the test files that should notice it; so are the guards of the read side (`blocked_by`, the
listings, `status`, the command line's and the dashboard's checks, the deploy check, the
nodes), of the codec's NUL check and of the notifier's wake-ups. For each mutant the
script edits a *copy* of the repository (the worktree is never touched), runs those tests
(`--all`: the whole suite) with `-x`, and prints one JSON line: the mutant, the guard,
`killed` or `survived`, and the first failing test. A summary table goes to stderr at the
end; the exit status is 1 when a mutant that is not argued `equivalent` survived.

All runs share one embedded PostgreSQL (or `--dsn`), as `GENDURABLE_TEST_DSN`. `--list`
prints the mutants; `--check` only verifies that each one applies to the current sources
(each edit found exactly once; a statement keeps its parameters, or it would fail on them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SQL = "src/gendurable/sql/"
SCHEMA = SQL + "migrations/0001_initial.sql"
ENDED = SQL + "migrations/0003_ended_fast_path.sql"
"""Where `instances_ended` is defined last (the function the database runs)."""
DECIDE = "src/gendurable/engine/decide.py"
GROUP = "src/gendurable/engine/group_commit.py"

# Test sets, most specific first (the run stops at the first failure).
GUARDS = "tests/engine/test_guards.py"
LOCKS = "tests/db/test_lock_order.py"
SKIPS = "tests/db/test_skip_locked.py"
MACHINE = "tests/props/test_state_machine.py"
GRANT = "tests/props/test_rate_grant_props.py"
DECIDE_PROPS = "tests/props/test_decide_props.py"
DECIDE_TABLE = "tests/engine/test_decide.py"
EFFECTS = "tests/engine/test_terminal_effects.py"
CASCADE = "tests/engine/test_cancel_cascade.py"
START = "tests/engine/test_start.py"
OUTCOMES = "tests/engine/test_outcomes.py"
CHILDREN = "tests/engine/test_children.py"
RESULT = "tests/engine/test_result.py"
GC = "tests/maintenance/test_collector.py"
LIMITS = "tests/engine/test_rate_limits.py"
CONCURRENCY = "tests/engine/test_concurrency_keys.py"
LEAN = "tests/db/test_lean_claim.py"
AWAITS = "tests/engine/test_awaits.py"
DELIVERY = "tests/engine/test_signal_delivery.py"
RACES = "tests/engine/test_signal_races.py"
SIGNAL_GUARDS = "tests/engine/test_signal_guards.py"
LEASES = "tests/e2e/test_leases.py"
STALE = "tests/e2e/test_stale.py"
ACT = "tests/cli/test_act.py"
# The read side and the edges (issue K, item 6).
BLOCKED = "tests/engine/test_blocked_by.py"
NODES = "tests/maintenance/test_nodes.py"
BAD_KEYS = "tests/engine/test_bad_keys.py"
INSPECT = "tests/cli/test_inspect.py"
DEPLOY = "tests/deploy/test_check.py"
DEPLOY_COMMAND = "tests/deploy/test_check_command.py"
DEPLOY_UPGRADES = "tests/deploy/test_check_upgrades.py"
WEB_PAGES = "tests/web/test_web_pages.py"
WEB_ACTIONS = "tests/web/test_web_actions.py"
WEB_INPUTS = "tests/web/test_web_inputs.py"
LISTENER = "tests/faults/test_fault_listener.py"
DASH_STATEMENTS = "tests/db/test_dashboard_plans.py"
RECHECKS = "tests/db/test_lock_rechecks.py"
PLAIN = "tests/db/test_plain_commit.py"
INTERLEAVE = "tests/db/test_interleavings.py"
INTERLEAVINGS = INTERLEAVE
COMMITTER = "src/gendurable/engine/committer.py"
# Queue pause and idempotent signals (issue N, items 2 and 3).
PAUSE_RACES = "tests/db/test_pause_races.py"
PAUSE = "tests/engine/test_queue_pause.py"
IDEM = "tests/engine/test_idempotent_signals.py"
ACKS = "tests/faults/test_fault_lost_acks.py"
QUEUES_CLI = "tests/cli/test_queues.py"
WEB_QUEUES = "tests/web/test_web_queue_actions.py"
Q = SQL + "queues.sql"


@dataclass(frozen=True)
class Mutant:
    """Replace each `old` by its `new` (each found exactly once) in the `where` block of
    `path`: a named statement (`-- name: x`), `fn:x` (a function of the schema), `def x`
    (a function of a Python file), or "" (the whole file)."""

    id: str
    path: str
    where: str
    edits: tuple[tuple[str, str], ...]
    guard: str
    tests: tuple[str, ...]
    equivalent: str = ""  # why the change cannot be observed, when it cannot


def m(
    id: str,
    path: str,
    where: str,
    old: str | list[tuple[str, str]],
    new: str,
    guard: str,
    *tests: str,
    equivalent: str = "",
) -> Mutant:
    edits = tuple(old) if isinstance(old, list) else ((old, new),)
    return Mutant(id, path, where, edits, guard, tests, equivalent)


I = SQL + "instances.sql"  # noqa: E741 (a path, read like the others)
S = SQL + "signals.sql"
M = SQL + "maintenance.sql"
G = SQL + "gc.sql"
R = SQL + "repair.sql"
N = SQL + "nodes.sql"
INSPECT_SQL = SQL + "inspect.sql"
DASH_SQL = SQL + "dashboard.sql"
DEPLOY_SQL = SQL + "deploy_check.sql"
WEB = "src/gendurable/web/"
CLI = "src/gendurable/cli/"
OWN_SPAWN = "WHERE i.id = :id AND i.locked_by = :locked_by AND i.status = 'executing'"
LIVE = "__live__"
EXECUTING_ONLY = (
    "locked_by is set only together with status 'executing' (by the claim, a local start, a "
    "local wake, a continue), and every statement that leaves 'executing' clears it (the "
    "state machine checks this after every step), so `locked_by = $worker` already implies "
    "'executing'"
)
BUCKETS_SORTED = (
    "the buckets' DISTINCT reads `demand`, which its window function sorted by (limit, "
    "partition): PostgreSQL runs it as Unique over that order, so the insert takes the "
    "buckets in key order anyway; the reversed ORDER BY (claim.bucket_order) is killed"
)

MUTANTS: list[Mutant] = [
    # -- start ------------------------------------------------------------------------------
    m(
        "insert.created",
        I,
        "instance_insert",
        "(i.xmax = 0) AS created",
        "true AS created",
        "start tells a fresh insert from the live holder of the key",
        START,
    ),
    m(
        "insert.scope",
        I,
        "instance_insert",
        ":key, :scope::text[]::__schema__.status[], :concurrency_key",
        ":key, (CASE WHEN :scope::text[] IS NOT NULL THEN '{available,executing,awaiting,waiting}' "
        "END)::text[]::__schema__.status[], :concurrency_key",
        "start stores the key's scope",
        START,
        MACHINE,
    ),
    m(
        "insert_many.scope",
        I,
        "instance_insert_many",
        "CASE WHEN :scope_rows::text[] IS NULL THEN :scope::text[]::__schema__.status[]\n"
        "                ELSE u.scope::__schema__.status[] END AS scope,",
        "CASE WHEN :scope_rows::text[] IS NULL OR :scope::text[] IS NULL\n"
        "                THEN '{available,executing,awaiting,waiting}'::__schema__.status[]\n"
        "                ELSE '{available,executing,awaiting,waiting}'::__schema__.status[] END"
        " AS scope,",
        "start_many stores each key's scope",
        START,
        MACHINE,
    ),
    m(
        "insert_many.key_order",
        I,
        "instance_insert_many",
        'ORDER BY r.workflow COLLATE "C", r.key COLLATE "C", r.ord',
        "ORDER BY r.ord",
        "lock order: batch inserts take key locks in key order",
        LOCKS,
        START,
    ),
    m(
        "insert_many.unkeyed_order",
        I,
        "instance_insert_many",
        "    WHERE r.key IS NULL\n    ORDER BY r.ord",
        "    WHERE r.key IS NULL\n    ORDER BY r.workflow, r.ord",
        "start_many: unkeyed rows go in in entry order (their handles follow id order)",
        START,
    ),
    m(
        "insert.local_status",
        I,
        "instance_insert",
        "CASE WHEN local.claimed THEN 'executing'::__schema__.status\n"
        "                ELSE 'available'::__schema__.status END",
        "'available'::__schema__.status",
        "local start: the row is inserted executing (no other claim can take it)",
        GUARDS,
        "tests/engine/test_local_runs.py",
    ),
    m(
        "insert.local_only_when_asked",
        I,
        "instance_insert",
        "SELECT CASE WHEN :locked_by::text IS NULL THEN false",
        "SELECT CASE WHEN false THEN false",
        "local start: a start without a scheduler is inserted available",
        GUARDS,
        START,
    ),
    m(
        "insert.local_lease",
        I,
        "instance_insert",
        "CASE WHEN local.claimed THEN now.t + :lease::interval END",
        "CASE WHEN local.claimed THEN now.t + 0 * :lease::interval END",
        "local start: the claim lasts its lease",
        GUARDS,
        "tests/engine/test_local_runs.py",
    ),
    m(
        "insert.local_notify",
        I,
        "instance_insert",
        "AND ins.run_at <= now.t AND ins.locked_by IS NULL",
        "AND ins.run_at <= now.t",
        "local start: a row claimed at insert is announced to nobody",
        GUARDS,
        "tests/engine/test_local_runs.py",
    ),
    m(
        "insert.local_conflict",
        I,
        "instance_insert",
        "DO UPDATE SET key = excluded.key\n",
        "DO UPDATE SET key = excluded.key, status = excluded.status,\n"
        "    locked_by = excluded.locked_by, locked_until = excluded.locked_until\n",
        "local start: a start that meets its key's live holder claims nothing",
        GUARDS,
        START,
    ),
    m(
        "insert.unkeyed_plain",
        "src/gendurable/db/engine_store.py",
        "",
        "        if row.key is None:\n",
        "        if False:\n",
        "an unkeyed start goes in by the plain insert (no speculative insertion)",
        START,
    ),
    m(
        "insert.keyed_dedups",
        "src/gendurable/db/engine_store.py",
        "",
        "        if row.key is None:\n",
        "        if True:\n",
        "a keyed start goes through the insert that finds its key's live holder",
        START,
    ),
    m(
        "insert_unkeyed.local_status",
        I,
        "instance_insert_unkeyed",
        "CASE WHEN local.claimed THEN 'executing'::__schema__.status\n"
        "                ELSE 'available'::__schema__.status END",
        "'available'::__schema__.status",
        "local unkeyed start: the row is inserted executing (no other claim can take it)",
        GUARDS,
    ),
    m(
        "insert_unkeyed.local_only_when_asked",
        I,
        "instance_insert_unkeyed",
        "SELECT CASE WHEN :locked_by::text IS NULL THEN false",
        "SELECT CASE WHEN false THEN false",
        "local unkeyed start: a start without a scheduler is inserted available",
        GUARDS,
    ),
    m(
        "insert_unkeyed.local_lease",
        I,
        "instance_insert_unkeyed",
        "CASE WHEN local.claimed THEN now.t + :lease::interval END",
        "CASE WHEN local.claimed THEN now.t + 0 * :lease::interval END",
        "local unkeyed start: the claim lasts its lease",
        GUARDS,
    ),
    m(
        "insert_unkeyed.local_notify",
        I,
        "instance_insert_unkeyed",
        "WHEN ins.run_at <= now.t AND ins.locked_by IS NULL",
        "WHEN ins.run_at <= now.t",
        "local unkeyed start: a row claimed at insert is announced to nobody",
        GUARDS,
    ),
    m(
        "insert_unkeyed.notify_due_only",
        I,
        "instance_insert_unkeyed",
        "WHEN ins.run_at <= now.t AND ins.locked_by IS NULL",
        "WHEN ins.locked_by IS NULL",
        "an unkeyed start due later is not announced now",
        START,
        GUARDS,
    ),
    m(
        "insert_unkeyed.scope",
        I,
        "instance_insert_unkeyed",
        ":scope::text[]::__schema__.status[], :concurrency_key",
        "(CASE WHEN :scope::text[] IS NOT NULL THEN '{available,executing,awaiting,waiting}' "
        "END)::text[]::__schema__.status[], :concurrency_key",
        "an unkeyed start stores its scope as a keyed one does",
        START,
    ),
    # -- the claim --------------------------------------------------------------------------
    m(
        "claim.status",
        I,
        "instance_claim",
        "WHERE i.status = 'available' AND i.queue = :queue",
        "WHERE i.queue = :queue",
        "the claim takes available rows only",
        LEAN,
        OUTCOMES,
        AWAITS,
    ),
    m(
        "claim.due",
        I,
        "instance_claim",
        "AND i.run_at <= now.t\n",
        "\n",
        "deadline: the claim takes due rows only",
        LEAN,
        START,
        OUTCOMES,
    ),
    m(
        "claim.queue",
        I,
        "instance_claim",
        "AND i.queue = :queue AND",
        "AND :queue::text IS NOT NULL AND",
        "the claim takes rows of its own queue",
        LEAN,
        START,
        GUARDS,
    ),
    m(
        "claim.known_step",
        I,
        "instance_claim",
        "JOIN known k ON k.workflow = i.workflow AND k.step = i.step",
        "JOIN known k ON k.workflow = i.workflow",
        "rows at a step this deploy does not know stay untouched",
        LEAN,
        GUARDS,
        "tests/engine/test_blocked_by.py",
    ),
    m(
        "claim.ck_busy",
        I,
        "instance_claim",
        "(NOT EXISTS (SELECT 1 FROM __schema__.instances e\n"
        "                           WHERE e.concurrency_key = i.concurrency_key\n"
        "                             AND e.status = 'executing')\n",
        "(true\n",
        "concurrency keys: a key executing elsewhere is passed over",
        CONCURRENCY,
    ),
    m(
        "claim.ck_lock",
        I,
        "instance_claim",
        "AND pg_try_advisory_xact_lock(\n"
        "                   hashtextextended(__key_lock_prefix__ || i.concurrency_key, 0))",
        "AND hashtextextended(__key_lock_prefix__ || i.concurrency_key, 0) IS NOT NULL",
        "concurrency keys: concurrent claims pass over each other's keys",
        CONCURRENCY,
    ),
    m(
        "claim.ck_first_of_key",
        I,
        "instance_claim",
        [
            ("AND i.id = (SELECT h.id FROM", "AND i.id IN (SELECT h.id FROM"),
            (
                "                           LIMIT 1)\n               AND pg_try",
                "                           )\n               AND pg_try",
            ),
        ],
        "",
        "concurrency keys: one row per key in a batch (only the key's most urgent due row)",
        CONCURRENCY,
    ),
    m(
        "claim.ck_head_order",
        I,
        "instance_claim",
        "                           ORDER BY h.priority DESC, h.run_at, h.id\n",
        "                           ORDER BY h.id DESC\n",
        "concurrency keys: a key's most urgent due row is the one a claim takes",
        CONCURRENCY,
    ),
    m(
        "claim.ck_contended",
        I,
        "instance_claim",
        "AND h.status = 'available' AND h.run_at <= now.t AND h.id <> p.id",
        "AND h.status = 'available' AND h.run_at <= now.t",
        "concurrency keys: `contended` counts keys with more rows waiting, not the row taken",
        CONCURRENCY,
    ),
    m(
        "claim.priority",
        I,
        "instance_claim",
        "ORDER BY i.priority DESC, i.run_at, i.id\n",
        "ORDER BY i.run_at, i.id\n",
        "priority ordering of the pick",
        LEAN,
        START,
    ),
    m(
        "claim.skip_locked",
        I,
        "instance_claim",
        "FOR UPDATE OF i SKIP LOCKED",
        "FOR UPDATE OF i",
        "SKIP LOCKED: a claim never waits for rows another claim holds",
        LEAN,
        SKIPS,
    ),
    m(
        "claim.row_lock",
        I,
        "instance_claim",
        "    FOR UPDATE OF i SKIP LOCKED\n",
        "",
        "the claim locks what it picks (no row claimed twice)",
        LEAN,
        SKIPS,
    ),
    m(
        "claim.grant",
        I,
        "instance_claim",
        "coalesce(d.cum <= b.granted, false)",
        "coalesce(b.name IS NOT NULL, false)",
        "rate grant: cum <= granted",
        GRANT,
        LIMITS,
    ),
    m(
        "claim.grant_new_bucket",
        I,
        "instance_claim",
        "AND d.cum <= cfg.burst) g",
        ") g",
        "rate grant: a new bucket grants the prefix that fits its burst",
        GRANT,
        LIMITS,
    ),
    m(
        "claim.grant_fits",
        I,
        "instance_claim",
        "AND d.cum <= f.avail) g)",
        ") g)",
        "rate grant: the prefix that fits the tokens there",
        GRANT,
        LIMITS,
    ),
    m(
        "claim.burst_cap",
        I,
        "instance_claim",
        "least(c.burst::float8,",
        "greatest(0::float8,",
        "rate grant: a bucket refills up to its burst only",
        GRANT,
        LIMITS,
    ),
    m(
        "claim.refill_forward",
        I,
        "instance_claim",
        "greatest(0, extract(epoch FROM excluded",
        "greatest(-1e9, extract(epoch FROM excluded",
        "rate grant: a bucket refreshed later than now is not drained",
        GRANT,
    ),
    m(
        "claim.bucket_order",
        I,
        "instance_claim",
        "    ORDER BY n.name, n.part\n",
        "    ORDER BY n.name DESC, n.part DESC\n",
        "lock order: buckets are taken in key order",
        LOCKS,
        LIMITS,
    ),
    m(
        "claim.bucket_order_dropped",
        I,
        "instance_claim",
        "    ORDER BY n.name, n.part\n",
        "",
        "lock order: buckets are taken in key order (the ORDER BY deleted)",
        LOCKS,
        LIMITS,
        equivalent=BUCKETS_SORTED,
    ),
    m(
        "claim.throttle_defer",
        I,
        "instance_claim",
        "run_at = CASE WHEN v.go THEN i.run_at ELSE v.wake_at END",
        "run_at = i.run_at",
        "a throttled row waits for its tokens instead of holding the queue",
        GRANT,
        LIMITS,
    ),
    m(
        "claim.lease",
        I,
        "instance_claim",
        "THEN now.t + v.lease END",
        "THEN now.t END",
        "a claim lasts its lease",
        LEAN,
        GUARDS,
        LEASES,
    ),
    # -- the lean claim: the claim's scan for a front of plain rows -----------------------------
    m(
        "claim_lean.status",
        I,
        "instance_claim_lean",
        "WHERE i.status = 'available' AND i.queue = :queue",
        "WHERE i.queue = :queue",
        "the lean claim takes available rows only",
        LEAN,
    ),
    m(
        "claim_lean.due",
        I,
        "instance_claim_lean",
        "AND i.run_at <= now.t\n",
        "\n",
        "the lean claim takes due rows only",
        LEAN,
    ),
    m(
        "claim_lean.queue",
        I,
        "instance_claim_lean",
        "AND i.queue = :queue AND",
        "AND :queue::text IS NOT NULL AND",
        "the lean claim takes rows of its own queue",
        LEAN,
    ),
    m(
        "claim_lean.known_step",
        I,
        "instance_claim_lean",
        "JOIN known k ON k.workflow = i.workflow AND k.step = i.step",
        "JOIN known k ON k.workflow = i.workflow",
        "the lean claim leaves rows at a step this deploy does not know",
        LEAN,
    ),
    m(
        "claim_lean.paused",
        I,
        "instance_claim_lean",
        "      AND NOT (SELECT __schema__.queue_paused(:queue))\n",
        "",
        "a lean claim of a paused queue takes nothing",
        LEAN,
    ),
    m(
        "claim_lean.priority",
        I,
        "instance_claim_lean",
        "ORDER BY i.priority DESC, i.run_at, i.id\n",
        "ORDER BY i.run_at, i.id\n",
        "the lean claim takes rows in priority order",
        LEAN,
    ),
    m(
        "claim_lean.skip_locked",
        I,
        "instance_claim_lean",
        "FOR UPDATE OF i SKIP LOCKED",
        "FOR UPDATE OF i",
        "the lean claim never waits for rows another transaction holds",
        LEAN,
    ),
    m(
        "claim_lean.row_lock",
        I,
        "instance_claim_lean",
        "    FOR UPDATE OF i SKIP LOCKED\n",
        "",
        "the lean claim locks what it picks",
        LEAN,
    ),
    m(
        "claim_lean.lease",
        I,
        "instance_claim_lean",
        "locked_until = now.t + p.lease",
        "locked_until = now.t",
        "a lean claim lasts its pair's lease",
        LEAN,
    ),
    m(
        "claim_lean.throttled",
        I,
        "instance_claim_lean",
        "        throttled = false, updated_at = now.t\n",
        "        updated_at = now.t\n",
        "a lean claim clears `throttled`, as the general claim does",
        LEAN,
    ),
    m(
        "claim_lean.general_met",
        I,
        "instance_claim_lean",
        "WHERE i.id = p.id AND NOT g.met",
        "WHERE i.id = p.id",
        "the lean claim takes nothing when a row with a key or a limit is among its rows",
        LEAN,
    ),
    m(
        "claim_lean.general_key",
        I,
        "instance_claim_lean",
        "(i.concurrency_key IS NOT NULL OR i.rate_limit IS NOT NULL) AS general",
        "(i.rate_limit IS NOT NULL) AS general",
        "a row with a concurrency key sends the claim to `instance_claim`",
        LEAN,
    ),
    m(
        "claim_lean.general_limit",
        I,
        "instance_claim_lean",
        "(i.concurrency_key IS NOT NULL OR i.rate_limit IS NOT NULL) AS general",
        "(i.concurrency_key IS NOT NULL) AS general",
        "a row with a rate limit sends the claim to `instance_claim`",
        LEAN,
    ),
    m(
        "claim_lean.store_falls_back",
        "src/gendurable/db/engine_store.py",
        "",
        "            if not rows or rows[0].id is not None:\n                return rows\n",
        "            return rows\n",
        "the store claims with `instance_claim` when the lean claim fell back",
        LEAN,
        CONCURRENCY,
    ),
    m(
        "claim_lean.fallback_answer",
        I,
        "instance_claim_lean",
        "FROM general WHERE general.met",
        "FROM general WHERE false",
        "the lean claim says when it fell back (else such rows would never be claimed)",
        LEAN,
    ),
    # -- park: the group commit's 'park' part, and `instances_parked` (its recheck) --------
    m(
        "park.owner",
        I,
        "outcome_batch",
        "AND i.locked_by = b.locked_by AND",
        "AND (i.locked_by = b.locked_by OR b.kind = 'park') AND",
        "ownership: a park commits only for the worker holding the claim",
        GUARDS,
        STALE,
    ),
    m(
        "park.owner_status",
        I,
        "outcome_batch",
        "AND i.locked_by = b.locked_by AND i.status = 'executing'",
        "AND i.locked_by = b.locked_by AND (i.status = 'executing' OR b.kind = 'park')",
        "ownership: a park checks status executing",
        GUARDS,
        STALE,
        equivalent=EXECUTING_ONLY,
    ),
    m(
        "park.consume_all",
        I,
        "outcome_batch",
        "AND s.id = ANY (b.consumed)",
        "AND (s.id = ANY (b.consumed) OR upd.kind = 'park')",
        "consumption: a park deletes what the step saw only",
        AWAITS,
        MACHINE,
    ),
    m(
        "park.consume_none",
        I,
        "outcome_batch",
        "AND s.id = ANY (b.consumed)",
        "AND s.id = ANY (b.consumed) AND upd.kind <> 'park'",
        "consumption: a park deletes what the step saw",
        AWAITS,
        MACHINE,
    ),
    m(
        "park.keep_deadline",
        I,
        "outcome_batch",
        "WHEN 'park' THEN CASE WHEN b.keep_deadline THEN i.await_deadline",
        "WHEN 'park' THEN CASE WHEN b.keep_deadline AND false THEN i.await_deadline",
        "deadline: a reawait keeps its deadline",
        AWAITS,
        MACHINE,
    ),
    m(
        "park.seen",
        I,
        "outcome_batch",
        "await_seen = CASE b.kind WHEN 'park' THEN b.seen",
        "await_seen = CASE b.kind WHEN 'park' THEN 0",
        "a reawait records the last signal it saw (no spin)",
        AWAITS,
    ),
    m(
        "park.children",
        I,
        "outcome_batch",
        "WHEN b.kind = 'park' AND NOT b.keep_children THEN NULL",
        "WHEN b.kind = 'park' AND NOT b.keep_children AND false THEN NULL",
        "a goto into an await drops ctx.children",
        GUARDS,
        CHILDREN,
        MACHINE,
    ),
    m(
        "park.children_kept",
        I,
        "outcome_batch",
        "WHEN b.kind = 'park' AND NOT b.keep_children THEN NULL",
        "WHEN b.kind = 'park' THEN NULL",
        "a spawn's awaiting `then` step keeps ctx.children while it waits",
        GUARDS,
        CHILDREN,
        MACHINE,
    ),
    m(
        "park.recheck_called",
        I,
        "outcome_batch",
        "(SELECT array_agg(upd.id) FROM upd WHERE upd.kind = 'park')",
        "(SELECT array_agg(upd.id) FROM upd WHERE upd.kind = 'park' AND false)",
        "park recheck: the group commit rechecks every row it parked",
        SIGNAL_GUARDS,
        AWAITS,
        RACES,
    ),
    m(
        "recheck.off",
        SCHEMA,
        "fn:instances_parked",
        "WHERE i.id = ANY (parked) AND i.status = 'awaiting'\n",
        "WHERE i.id = ANY (parked) AND i.status = 'awaiting' AND false\n",
        "park recheck: a signal that came while the step ran is found",
        SIGNAL_GUARDS,
        DELIVERY,
        RACES,
    ),
    m(
        "recheck.names",
        SCHEMA,
        "fn:instances_parked",
        "          AND (EXISTS (SELECT 1 FROM __schema__.signals s\n"
        "                       WHERE s.instance_id = i.id AND s.name = ANY (i.await_names)\n",
        "          AND (EXISTS (SELECT 1 FROM __schema__.signals s\n"
        "                       WHERE s.instance_id = i.id\n",
        "park recheck: only a signal of an awaited name wakes",
        SIGNAL_GUARDS,
        AWAITS,
        "tests/engine/test_signal_later_step.py",
    ),
    m(
        "recheck.newer",
        SCHEMA,
        "fn:instances_parked",
        "AND s.id > i.await_seen)\n               OR i.await_deadline",
        ")\n               OR i.await_deadline",
        "park recheck: only a signal newer than the seen mark wakes",
        AWAITS,
    ),
    m(
        "recheck.deadline",
        SCHEMA,
        "fn:instances_parked",
        "\n               OR i.await_deadline <= t)",
        ")",
        "park recheck: a deadline already passed wakes at once",
        SIGNAL_GUARDS,
        AWAITS,
    ),
    m(
        "recheck.timed_out",
        SCHEMA,
        "fn:instances_parked",
        "            timed_out = NOT EXISTS (",
        "            timed_out = false AND NOT EXISTS (",
        "park recheck: a park woken by its passed deadline is timed out",
        SIGNAL_GUARDS,
        AWAITS,
    ),
    m(
        "recheck.timed_out_signal",
        SCHEMA,
        "fn:instances_parked",
        "            timed_out = NOT EXISTS (",
        "            timed_out = true OR NOT EXISTS (",
        "park recheck: a park woken by a signal is not timed out",
        SIGNAL_GUARDS,
        AWAITS,
        DELIVERY,
    ),
    m(
        "recheck.announce",
        SCHEMA,
        "fn:instances_parked",
        "SELECT count(pg_notify(channel, 'q:' || q.queue)) AS n",
        "SELECT count(q.queue) AS n",
        "park recheck: a park woken at once is announced to its queue",
        SIGNAL_GUARDS,
        AWAITS,
    ),
    m(
        "recheck.status",
        SCHEMA,
        "fn:instances_parked",
        "WHERE i.id = ANY (parked) AND i.status = 'awaiting'\n",
        "WHERE i.id = ANY (parked)\n",
        "park recheck: only an awaiting row is woken",
        SIGNAL_GUARDS,
        AWAITS,
        equivalent="`instances_parked` is called only by the group commit, with the ids its "
        "guarded UPDATE has just set 'awaiting' while it holds their row locks (taken in its "
        "`locked` step): nothing can move them off 'awaiting' before the recheck reads them",
    ),
    # -- release, cancel --------------------------------------------------------------------
    m(
        "release.owner",
        I,
        "instance_release",
        "AND i.locked_by = :locked_by AND i.status = 'executing'",
        "AND :locked_by::text IS NOT NULL",
        "ownership: a release gives back only its own claim",
        GUARDS,
    ),
    m(
        "cancel.status",
        I,
        "instance_cancel",
        f"AND i.status IN {LIVE}",
        "",
        "cancel ends live instances only",
        OUTCOMES,
        CHILDREN,
    ),
    m(
        "cancel.lock_order",
        I,
        "instance_cancel",
        "ORDER BY i.id\n    FOR UPDATE OF i",
        "ORDER BY i.id DESC\n    FOR UPDATE OF i",
        "lock order: cancel locks row and parent by id",
        LOCKS,
    ),
    m(
        "cancel.lock_parent",
        I,
        "instance_cancel",
        "SELECT ARRAY[t.id, t.parent_id] FROM __schema__.instances t",
        "SELECT ARRAY[t.id] FROM __schema__.instances t",
        "lock order: cancel locks the parent it counts down before ending the row",
        LOCKS,
    ),
    # -- group commit -----------------------------------------------------------------------
    m(
        "batch.owner",
        I,
        "outcome_batch",
        "AND ready.id = i.id\n      AND i.locked_by = b.locked_by AND i.status = 'executing'",
        "AND ready.id = i.id",
        "ownership: group commit (the issue's mutant)",
        EFFECTS,
        GUARDS,
        STALE,
    ),
    m(
        "batch.owner_locked_by",
        I,
        "outcome_batch",
        "AND i.locked_by = b.locked_by AND",
        "AND",
        "ownership: group commit checks locked_by",
        EFFECTS,
        GUARDS,
        STALE,
    ),
    m(
        "batch.owner_status",
        I,
        "outcome_batch",
        "AND i.locked_by = b.locked_by AND i.status = 'executing'",
        "AND i.locked_by = b.locked_by",
        "ownership: group commit checks status executing",
        EFFECTS,
        STALE,
        GUARDS,
        equivalent=EXECUTING_ONLY,
    ),
    m(
        "batch.attempt_retry",
        I,
        "outcome_batch",
        "WHEN 'retry' THEN i.attempt + 1",
        "WHEN 'retry' THEN i.attempt",
        "attempt counting: a retry counts an attempt",
        OUTCOMES,
    ),
    m(
        "batch.attempt_reset",
        I,
        "outcome_batch",
        "WHEN 'finish' THEN i.attempt ELSE 0 END",
        "WHEN 'finish' THEN i.attempt ELSE i.attempt END",
        "attempt counting: a goto starts the next step at attempt 0",
        PLAIN,
        OUTCOMES,
        GUARDS,
    ),
    m(
        "batch.continue_lease",
        I,
        "outcome_batch",
        "locked_until = CASE WHEN b.kind = 'continue' THEN now.t + b.lease END",
        "locked_until = CASE WHEN b.kind = 'continue' THEN now.t END",
        "a step chained on its claim (continue) gets a fresh lease",
        GUARDS,
        OUTCOMES,
        LEASES,
    ),
    m(
        "batch.continue_keeps_claim",
        I,
        "outcome_batch",
        "locked_by = CASE WHEN b.kind = 'continue' THEN i.locked_by END",
        "locked_by = CASE WHEN b.kind = 'continue' THEN NULL END",
        "a step chained on its claim (continue) stays its worker's",
        OUTCOMES,
        GUARDS,
    ),
    m(
        "batch.consume_exact",
        I,
        "outcome_batch",
        "\n      AND s.id = ANY (b.consumed)\n",
        "\n",
        "consumption: a goto deletes exactly the signals the step saw",
        AWAITS,
        MACHINE,
    ),
    m(
        "batch.consume_kind",
        I,
        "outcome_batch",
        "WHERE upd.kind IN ('goto', 'continue', 'park') AND s.instance_id",
        "WHERE s.instance_id",
        "consumption: only a goto, continue or park consumes",
        AWAITS,
        GUARDS,
        equivalent="the committer passes consumed signal ids only with goto, continue and park "
        "items (`_batch_item`): retries and ends carry none, so there is nothing to filter",
    ),
    m(
        "batch.lock_parents",
        I,
        "outcome_batch",
        "WHERE b.kind = 'finish' AND c.parent_id IS NOT NULL",
        "WHERE false",
        "lock order: group commit holds the parent it counts down before it ends the row",
        LOCKS,
    ),
    m(
        "batch.ready_parent",
        I,
        "outcome_batch",
        "       OR c.parent_id IN (SELECT id FROM locked)\n",
        "       OR true\n",
        "lock order: a row is ended only while the commit holds its parent (else busy)",
        LOCKS,
    ),
    m(
        "batch.lock_order",
        I,
        "outcome_batch",
        "    ORDER BY i.id\n    FOR UPDATE OF i SKIP LOCKED\n),\nready",
        "    ORDER BY i.id DESC\n    FOR UPDATE OF i SKIP LOCKED\n),\nready",
        "lock order: group commit locks rows and parents by id",
        LOCKS,
        SKIPS,
        equivalent="the rows and parents are taken with SKIP LOCKED: the statement never "
        "waits for them, so the order it takes them in can close no cycle, and it takes the "
        "same rows in any order; what it waits for later (descendants the cascade cancels) "
        "comes after all of them in either order. Without SKIP LOCKED the order matters "
        "(batch.skip_locked, and `batch_desc` in tests/engine/deadlock_load.py, which "
        "deadlocks)",
    ),
    m(
        "batch.skip_locked",
        I,
        "outcome_batch",
        "    FOR UPDATE OF i SKIP LOCKED\n),\nready",
        "    FOR UPDATE OF i\n),\nready",
        "SKIP LOCKED: a group commit never waits for a row someone else holds",
        SKIPS,
        LOCKS,
    ),
    m(
        "batch.ready_locked",
        I,
        "outcome_batch",
        "    SELECT b.id FROM b\n    JOIN locked ON locked.id = b.id\n",
        "    SELECT b.id FROM b\n",
        "SKIP LOCKED: a row the commit could not lock is not written (it would wait)",
        SKIPS,
    ),
    m(
        "batch.update_ready",
        I,
        "outcome_batch",
        "WHERE i.id = b.id AND ready.id = i.id",
        "WHERE i.id = b.id",
        "SKIP LOCKED: the update writes only the rows the commit holds",
        SKIPS,
    ),
    m(
        "batch.busy",
        I,
        "outcome_batch",
        "SELECT b.id, NULL, NULL, true, false FROM b WHERE b.id NOT IN (SELECT id FROM ready);",
        "SELECT b.id, NULL, NULL, true, false FROM b WHERE false;",
        "a row someone else held comes back busy (sent again), not stale (dropped)",
        SKIPS,
        LOCKS,
    ),
    m(
        "group.resend_busy",
        GROUP,
        "",
        "if item.id in busy:",
        "if False:",
        "a busy outcome is sent again, not reported stale",
        "tests/engine/test_group_commit.py",
        SKIPS,
    ),
    # -- the lean group commit (outcome_plain) and the committer's choice of statement -----
    m(
        "plain.owner",
        I,
        "outcome_plain",
        "    WHERE i.id = r.id\n      AND i.locked_by = r.locked_by AND i.status = 'executing'\n",
        "    WHERE i.id = r.id\n",
        "ownership: the plain group commit writes a row only for the worker holding its claim",
        PLAIN,
        EFFECTS,
    ),
    m(
        "plain.owner_locked_by",
        I,
        "outcome_plain",
        "AND i.locked_by = r.locked_by AND",
        "AND",
        "ownership: the plain group commit checks locked_by",
        PLAIN,
        EFFECTS,
    ),
    m(
        "plain.owner_status",
        I,
        "outcome_plain",
        "AND i.locked_by = r.locked_by AND i.status = 'executing'",
        "AND i.locked_by = r.locked_by",
        "ownership: the plain group commit checks status executing",
        PLAIN,
        EFFECTS,
        equivalent=EXECUTING_ONLY,
    ),
    m(
        "plain.skip_locked",
        I,
        "outcome_plain",
        "    FOR UPDATE OF i SKIP LOCKED\n),\nparents",
        "    FOR UPDATE OF i\n),\nparents",
        "SKIP LOCKED: the plain group commit never waits for a row someone else holds",
        SKIPS,
    ),
    m(
        "plain.parents_skip_locked",
        I,
        "outcome_plain",
        "    FOR UPDATE OF p SKIP LOCKED\n",
        "    FOR UPDATE OF p\n",
        "SKIP LOCKED: the plain group commit never waits for a parent someone else holds",
        LOCKS,
    ),
    m(
        "plain.lock_parents",
        I,
        "outcome_plain",
        "WHERE b.kind = 'finish' AND locked.parent_id IS NOT NULL",
        "WHERE false",
        "lock order: the plain group commit holds the parent it counts down",
        LOCKS,
        PLAIN,
    ),
    m(
        "plain.ready_parent",
        I,
        "outcome_plain",
        "       OR locked.parent_id IN (SELECT id FROM parents)\n",
        "       OR true\n",
        "lock order: a child is ended only while the plain commit holds its parent (else busy)",
        LOCKS,
    ),
    m(
        "plain.ready_locked",
        I,
        "outcome_plain",
        "    FROM b JOIN locked ON locked.id = b.id\n",
        "    FROM b LEFT JOIN locked ON locked.id = b.id\n",
        "SKIP LOCKED: a row the plain commit could not lock is not written (it would wait)",
        SKIPS,
    ),
    m(
        "plain.busy",
        I,
        "outcome_plain",
        "SELECT b.id, true, false FROM b WHERE b.id NOT IN (SELECT id FROM ready);",
        "SELECT b.id, true, false FROM b WHERE false;",
        "a row someone else held comes back busy from the plain commit (sent again)",
        SKIPS,
        LOCKS,
    ),
    m(
        "plain.continue_lease",
        I,
        "outcome_plain",
        "locked_until = CASE WHEN r.kept THEN now.t + r.lease END",
        "locked_until = CASE WHEN r.kept THEN now.t END",
        "a step chained on its claim (continue) gets a fresh lease",
        GUARDS,
        PLAIN,
    ),
    m(
        "plain.continue_keeps_claim",
        I,
        "outcome_plain",
        "locked_by = CASE WHEN r.kept THEN i.locked_by END",
        "locked_by = CASE WHEN r.kept THEN NULL END",
        "a step chained on its claim (continue) stays its worker's",
        GUARDS,
        PLAIN,
    ),
    m(
        "plain.attempt_reset",
        I,
        "outcome_plain",
        "attempt = CASE WHEN r.kind = 'finish' THEN i.attempt ELSE 0 END",
        "attempt = i.attempt",
        "attempt counting: a goto starts the next step at attempt 0",
        PLAIN,
        GUARDS,
    ),
    m(
        "plain.goto_delay",
        I,
        "outcome_plain",
        "ELSE now.t + coalesce(r.delay, interval '0') END",
        "ELSE now.t END",
        "a goto with a delay is due after it",
        PLAIN,
    ),
    m(
        "plain.children_from",
        I,
        "outcome_plain",
        "children_from = CASE WHEN r.kind = 'finish' THEN i.children_from END",
        "children_from = i.children_from",
        "a goto drops ctx.children",
        PLAIN,
    ),
    m(
        "plain.pause",
        I,
        "outcome_plain",
        "b.kind = 'continue' AND NOT coalesce(b.queue IN (SELECT queue FROM paused), false)",
        "b.kind = 'continue'",
        "a kept-claim move in a paused queue is committed as a plain goto",
        PAUSE_RACES,
        PLAIN,
    ),
    m(
        "plain.ended",
        I,
        "outcome_plain",
        "    WHERE upd.kind = 'finish' AND consumed_first.n >= 0\n    HAVING count(*) > 0\n",
        "    WHERE upd.kind = 'finish' AND false\n    HAVING count(*) > 0\n",
        "terminal effects: the plain commit's ends count parents down, purge and announce",
        EFFECTS,
        PLAIN,
    ),
    m(
        "plain.consume_exact",
        I,
        "outcome_plain",
        "\n      AND s.instance_id = c.instance_id AND s.id = c.signal_id\n",
        "\n      AND s.instance_id = c.instance_id\n",
        "consumption: the plain commit deletes exactly the signals the step saw, not one "
        "that arrived since",
        PLAIN,
        INTERLEAVINGS,
        AWAITS,
    ),
    m(
        "plain.consume_own",
        I,
        "outcome_plain",
        "AND s.instance_id = c.instance_id AND",
        "AND",
        "consumption: the plain commit deletes a consumed signal only from the inbox of the "
        "instance it is paired with",
        PLAIN,
    ),
    m(
        "plain.consume_taken",
        I,
        "outcome_plain",
        "WHERE upd.kind IN ('goto', 'continue') AND c.instance_id = upd.id\n",
        "WHERE upd.kind IN ('goto', 'continue')\n",
        "consumption: only a row the plain commit moved on loses the signals its step saw "
        "(a busy or stale outcome's stay)",
        PLAIN,
        INTERLEAVINGS,
    ),
    m(
        "plain.consume_kind",
        I,
        "outcome_plain",
        "WHERE upd.kind IN ('goto', 'continue') AND c.instance_id",
        "WHERE c.instance_id",
        "consumption: only a goto or continue consumes in the plain commit",
        PLAIN,
        EFFECTS,
        equivalent="the committer passes consumed signal ids only with goto, continue and park "
        "items (`_batch_item`): ends carry none, so there is nothing to filter",
    ),
    m(
        "plain.consume_first",
        I,
        "outcome_plain",
        "    FROM upd, now, (SELECT count(*) AS n FROM consumed) AS consumed_first\n"
        "    WHERE upd.kind = 'finish' AND consumed_first.n >= 0\n",
        "    FROM upd, now\n    WHERE upd.kind = 'finish'\n",
        "the plain commit consumes signals before the cascade purges the inboxes of the "
        "descendants it cancels (else the batch fails whole on a signal deleted twice)",
        EFFECTS,
    ),
    m(
        "plain.owner_rows",
        I,
        "outcome_plain",
        "coalesce(u.locked_by, :locked_by::text) AS locked_by",
        ":locked_by::text AS locked_by",
        "ownership: a batch of several workers' outcomes checks each row's own worker",
        PLAIN,
    ),
    m(
        "plain.owner_once",
        I,
        "outcome_plain",
        "coalesce(u.locked_by, :locked_by::text) AS locked_by",
        "coalesce(u.locked_by, nullif(:locked_by::text, :locked_by::text)) AS locked_by",
        "ownership: a batch of one worker's outcomes checks the worker sent once",
        PLAIN,
    ),
    m(
        "plain.by_position",
        I,
        "outcome_plain",
        "state = coalesce(coalesce((:state_rows::text[])[r.ord],",
        "state = coalesce(coalesce((:state_rows::text[])[1],",
        "each row of the plain commit gets its own value of a column sent per row",
        PLAIN,
    ),
    m(
        "plain.pass_consumed",
        COMMITTER,
        "",
        "consumed_signals=[signal for it in items for signal in it.consumed],",
        "consumed_signals=[],",
        "the committer hands the plain commit the signals its outcomes consumed",
        PLAIN,
        AWAITS,
    ),
    m(
        "plain.route_kinds",
        COMMITTER,
        "def _plain",
        "return item.kind in _PLAIN_KINDS and item.limit",
        "return item.limit",
        "parks and retries go through outcome_batch, never the plain commit",
        PLAIN,
    ),
    m(
        "plain.route_limit",
        COMMITTER,
        "def _plain",
        " and item.limit == NO_LIMIT",
        "",
        "an outcome entering a rate limit goes through outcome_batch (which writes it)",
        PLAIN,
    ),
    # -- spawn, children --------------------------------------------------------------------
    m(
        "spawn.owner",
        I,
        "outcome_spawn",
        OWN_SPAWN,
        "WHERE i.id = :id AND :locked_by::text IS NOT NULL",
        "ownership: a spawn commits only for the worker holding the claim",
        GUARDS,
    ),
    m(
        "spawn.consume_all",
        I,
        "outcome_spawn",
        "s.id = ANY (:consumed::bigint[])",
        "(s.id = ANY (:consumed::bigint[]) OR true)",
        "consumption: a spawn deletes what the step saw only",
        GUARDS,
        MACHINE,
    ),
    m(
        "children.latest_spawn",
        I,
        "children_load",
        "AND c.id >= p.from_id",
        "AND p.from_id > 0",
        "ctx.children holds the latest spawn's children only",
        GUARDS,
        MACHINE,
        CHILDREN,
    ),
    # -- signals ----------------------------------------------------------------------------
    m(
        "deliver.live_only",
        S,
        "signal_deliver",
        f"AND status IN {LIVE}",
        "",
        "a signal to an ended instance is refused and stores nothing",
        DELIVERY,
    ),
    m(
        "deliver.row_lock",
        S,
        "signal_deliver",
        "    FOR UPDATE\n",
        "",
        "no lost wake-up: delivery takes the row lock the park holds",
        SIGNAL_GUARDS,
        RACES,
    ),
    m(
        "deliver.flip_name",
        S,
        "signal_deliver",
        "WHERE i.id = target.id AND target.status = 'awaiting' "
        "AND :name = ANY (target.await_names)",
        "WHERE i.id = target.id AND target.status = 'awaiting'",
        "a signal wakes an instance only if it awaits that name",
        DELIVERY,
        SIGNAL_GUARDS,
    ),
    m(
        "deliver.flip_status",
        S,
        "signal_deliver",
        "target.status = 'awaiting' AND",
        "",
        "a signal wakes an awaiting instance only (never an executing one)",
        SIGNAL_GUARDS,
        DELIVERY,
    ),
    m(
        "deliver.local_asked",
        S,
        "signal_deliver",
        "SELECT CASE WHEN :locked_by::text IS NOT NULL AND target.queue = :queue",
        "SELECT CASE WHEN target.queue = :queue",
        "local wake: a delivery without a scheduler claims nothing",
        SIGNAL_GUARDS,
        DELIVERY,
    ),
    m(
        "deliver.local_queue",
        S,
        "signal_deliver",
        "AND target.queue = :queue\n",
        "AND (target.queue = :queue OR true)\n",
        "local wake: only a scheduler of the instance's queue claims it",
        SIGNAL_GUARDS,
        "tests/engine/test_local_runs.py",
    ),
    m(
        "deliver.local_concurrency_key",
        S,
        "signal_deliver",
        "AND target.concurrency_key IS NULL",
        "",
        "local wake: an instance with a concurrency key goes through the claim",
        SIGNAL_GUARDS,
        "tests/engine/test_local_runs.py",
    ),
    m(
        "deliver.local_rate_limit",
        S,
        "signal_deliver",
        "AND target.rate_limit IS NULL",
        "",
        "local wake: an instance under a rate limit goes through the claim",
        SIGNAL_GUARDS,
        "tests/engine/test_local_runs.py",
    ),
    m(
        "deliver.local_children",
        S,
        "signal_deliver",
        "AND target.children_from IS NULL",
        "",
        "local wake: a step that sees a spawn's children goes through the claim",
        SIGNAL_GUARDS,
        "tests/engine/test_local_runs.py",
    ),
    m(
        "deliver.local_lease",
        S,
        "signal_deliver",
        "THEN now.t + :lease::interval END",
        "THEN now.t + 0 * :lease::interval END",
        "local wake: the claim lasts its lease",
        SIGNAL_GUARDS,
    ),
    m(
        "deliver.local_notify",
        S,
        "signal_deliver",
        "FROM flip WHERE NOT flip.claimed)\n",
        "FROM flip)\n",
        "local wake: a row claimed by its delivery is announced to nobody",
        SIGNAL_GUARDS,
    ),
    m(
        "deliver.local_inbox_own",
        S,
        "signal_deliver",
        "WHERE flip.claimed AND s.instance_id = flip.id",
        "WHERE flip.claimed",
        "local wake: the inbox it brings is the instance's own",
        SIGNAL_GUARDS,
        "tests/engine/test_local_runs.py",
    ),
    m(
        "deliver.local_inbox_new",
        S,
        "signal_deliver",
        "    UNION ALL\n"
        "    SELECT ins.id, :name, :payload::jsonb, ins.received_at, :trace_context::text\n"
        "    FROM ins, flip WHERE flip.claimed\n",
        "",
        "local wake: the inbox it brings holds the waking signal",
        SIGNAL_GUARDS,
        "tests/engine/test_local_runs.py",
    ),
    m(
        "expire.deadline",
        S,
        "await_expire",
        "AND await_deadline <= now.t",
        "",
        "deadline: await timeouts fire at the deadline, not before",
        AWAITS,
    ),
    m(
        "expire.status",
        S,
        "await_expire",
        "WHERE status = 'awaiting' AND",
        "WHERE",
        "an await timeout wakes awaiting rows only",
        SIGNAL_GUARDS,
        AWAITS,
    ),
    m(
        "expire.skip_locked",
        S,
        "await_expire",
        "FOR UPDATE SKIP LOCKED",
        "FOR UPDATE",
        "SKIP LOCKED: the reaper never waits for a row",
        SKIPS,
    ),
    # -- maintenance ------------------------------------------------------------------------
    m(
        "heartbeat.owner",
        M,
        "lease_extend",
        [
            (
                "WHERE i.id = ANY (:ids::bigint[]) AND i.locked_by = ANY (:names::text[])\n",
                "WHERE i.id = ANY (:ids::bigint[]) AND :names::text[] IS NOT NULL\n",
            ),
            ("AND c.id = i.id AND i.locked_by = c.locked_by AND", "AND c.id = i.id AND"),
        ],
        "",
        "ownership: a heartbeat extends its own claims only",
        GUARDS,
        LEASES,
    ),
    m(
        "heartbeat.claim_name",
        M,
        "lease_extend",
        [
            (
                "AND i.locked_by = ANY (:names::text[])\n",
                "AND EXISTS (SELECT FROM unnest(:names::text[]) n\n"
                "                  WHERE starts_with(i.locked_by, split_part(n, '#', 1) || '#'))\n",
            ),
            (
                "AND i.locked_by = c.locked_by AND",
                "AND starts_with(i.locked_by, split_part(c.locked_by, '#', 1) || '#') AND",
            ),
        ],
        "",
        "ownership: a heartbeat extends a claim under the name it runs it by, not any claim "
        "of its scheduler (`<scheduler>#<n>`) on that row",
        GUARDS,
        LEASES,
    ),
    m(
        "heartbeat.ids",
        M,
        "lease_extend",
        [
            (
                "WHERE i.id = ANY (:ids::bigint[]) AND i.locked_by",
                "WHERE :ids::bigint[] IS NOT NULL AND i.locked_by",
            ),
            ("AND c.id = i.id AND i.locked_by", "AND i.locked_by"),
        ],
        "",
        "a heartbeat extends only the claims its scheduler runs (a lost claim answer, a run "
        "that ended without its commit, expires)",
        GUARDS,
        LEASES,
    ),
    m(
        "rescue.expired",
        M,
        "lease_rescue",
        "AND locked_until < now.t",
        "",
        "the reaper takes expired claims only",
        GUARDS,
        LEASES,
    ),
    m(
        "rescue.attempt",
        M,
        "lease_rescue",
        "attempt = i.attempt + 1, rescued",
        "attempt = i.attempt, rescued",
        "attempt counting: a lost claim counts an attempt",
        EFFECTS,
        LEASES,
    ),
    m(
        "rescue.dying",
        M,
        "lease_rescue",
        "status = CASE WHEN i.attempt + 1 >= i.max_attempts",
        "status = CASE WHEN false",
        "attempt counting: a crash on the last attempt fails the instance",
        EFFECTS,
        LEASES,
    ),
    m(
        "rescue.skip_locked",
        M,
        "lease_rescue",
        "LIMIT :limit\n    FOR UPDATE SKIP LOCKED",
        "LIMIT :limit\n    FOR UPDATE",
        "SKIP LOCKED: the reaper never waits for a row",
        SKIPS,
    ),
    m(
        "rescue.parent_skip_locked",
        M,
        "lease_rescue",
        "ORDER BY p.id\n    FOR UPDATE SKIP LOCKED",
        "ORDER BY p.id\n    FOR UPDATE",
        "SKIP LOCKED: the reaper never waits for a parent",
        SKIPS,
    ),
    m(
        "rescue.parent_guard",
        M,
        "lease_rescue",
        "      AND (NOT expired.dying OR expired.parent_id IS NULL\n"
        "           OR expired.parent_id IN (SELECT id FROM parents))\n",
        "",
        "a dying row whose parent is busy waits for the next round",
        SKIPS,
    ),
    m(
        "reclaim.expired",
        M,
        "claims_reclaim",
        "AND locked_until < now.t",
        "",
        "startup reclaim needs an expired lease",
        LEASES,
    ),
    m(
        "reclaim.prefix",
        M,
        "claims_reclaim",
        "      AND substr(locked_by, length(:prefix) + 1) ~ '^[0-9]+-[^-]+$'\n",
        "",
        "startup reclaim takes exactly its own predecessor's claims",
        LEASES,
    ),
    m(
        "reclaim.attempt",
        M,
        "claims_reclaim",
        "SET status = 'available', attempt = i.attempt + 1",
        "SET status = 'available', attempt = i.attempt",
        "attempt counting: a reclaimed claim counts an attempt",
        LEASES,
    ),
    # -- GC ---------------------------------------------------------------------------------
    m(
        "sweep.live_parent",
        G,
        "terminal_sweep",
        "      AND NOT EXISTS (\n"
        "          SELECT 1 FROM __schema__.instances p\n"
        "          WHERE p.id = i.parent_id\n"
        "            AND p.status IN __live__\n"
        "      )\n",
        "",
        "purge: GC keeps the children of a live parent",
        GC,
    ),
    m(
        "sweep.retention",
        G,
        "terminal_sweep",
        [
            (
                "      AND i.finished_at < coalesce(:now::timestamptz, now())"
                " - :retention::interval\n"
                "      AND (i.finished_at, i.id)",
                "      AND coalesce(:now::timestamptz, now()) - :retention::interval IS NOT NULL\n"
                "      AND (i.finished_at, i.id)",
            ),
            (
                "      AND i.finished_at < coalesce(:now::timestamptz, now())"
                " - :retention::interval\n"
                "      AND NOT EXISTS",
                "      AND NOT EXISTS",
            ),
        ],
        "",
        "purge: GC deletes rows past their retention only",
        GC,
    ),
    m(
        "sweep.terminal",
        G,
        "terminal_sweep",
        [
            (
                "    WHERE i.status IN __terminal__\n      AND i.finished_at < coalesce",
                "    WHERE i.finished_at < coalesce",
            ),
            (
                "      AND i.status IN __terminal__\n      AND i.finished_at < coalesce",
                "      AND i.finished_at < coalesce",
            ),
        ],
        "",
        "purge: GC deletes ended rows only",
        GC,
    ),
    m(
        "sweep.skip_locked",
        G,
        "terminal_sweep",
        "FOR UPDATE OF i SKIP LOCKED",
        "FOR UPDATE OF i",
        "SKIP LOCKED: GC never waits for a row",
        GC,
    ),
    m(
        "bucket_sweep.full",
        G,
        "bucket_sweep",
        ">= c.burst",
        ">= 0",
        "purge: GC deletes full buckets only",
        GC,
    ),
    m(
        "bucket_sweep.skip_locked",
        G,
        "bucket_sweep",
        "FOR UPDATE OF b SKIP LOCKED",
        "FOR UPDATE OF b",
        "SKIP LOCKED: GC never waits for a bucket",
        SKIPS,
    ),
    m(
        "config_sweep.ttl",
        G,
        "rate_config_sweep",
        "WHERE c.updated_at < coalesce(:now::timestamptz, now()) - :ttl::interval",
        "WHERE :now::timestamptz IS NULL OR :ttl::interval IS NOT NULL",
        "purge: GC removes configs nobody refreshed only",
        GC,
    ),
    # -- repair -----------------------------------------------------------------------------
    m(
        "retry.failed_only",
        R,
        "instance_retry",
        "WHERE i.id = t.id AND t.status = 'failed'",
        "WHERE i.id = t.id",
        "retry takes failed instances only",
        ACT,
    ),
    m(
        "retry.holder",
        R,
        "instance_retry",
        "AND NOT EXISTS (SELECT 1 FROM holder)",
        "",
        "retry never takes a key another live instance holds",
        ACT,
    ),
    m(
        "retry.parent_waits",
        R,
        "instance_retry",
        "AND (t.parent_id IS NULL OR EXISTS (SELECT 1 FROM parent WHERE parent.waits))",
        "",
        "retry of a child needs its parent still waiting",
        ACT,
    ),
    # -- lock shapes and orders: a row updated meanwhile is rechecked on its own conditions --
    m(
        "cancel.lock_shape",
        I,
        "instance_cancel",
        "locked AS (\n"
        "    SELECT i.id FROM __schema__.instances i\n"
        "    WHERE i.id = ANY ((SELECT ARRAY[t.id, t.parent_id] FROM __schema__.instances t\n"
        "                       WHERE t.id = :id)::bigint[])\n",
        "target AS (\n"
        "    SELECT id, parent_id FROM __schema__.instances WHERE id = :id\n"
        "),\n"
        "locked AS (\n"
        "    SELECT i.id FROM __schema__.instances i\n"
        "    WHERE i.id IN (SELECT id FROM target\n"
        "                   UNION ALL SELECT parent_id FROM target WHERE parent_id IS NOT NULL)\n",
        "lock shape: cancel locks its rows through an id array, so the recheck of a row a "
        "heartbeat updated meanwhile keeps it under every plan (the IN (... UNION ALL ...) it "
        "had lost the row under nested loops)",
        RECHECKS,
    ),
    m(
        "batch.lock_shape",
        I,
        "outcome_batch",
        [
            ("WHERE i.id = ANY ((SELECT array_agg(x.id) FROM (\n", "WHERE i.id IN (\n"),
            ("AND c.parent_id IS NOT NULL) x)::bigint[])\n", "AND c.parent_id IS NOT NULL)\n"),
        ],
        "",
        "lock shape: the group commit locks its rows through an id array, so a row a heartbeat "
        "updated after its snapshot is locked and committed, not reported busy",
        RECHECKS,
    ),
    m(
        "batch.consume_first",
        I,
        "outcome_batch",
        "    FROM upd, now, (SELECT count(*) AS n FROM consumed) AS consumed_first\n"
        "    WHERE upd.kind = 'finish' AND consumed_first.n >= 0\n",
        "    FROM upd, now\n    WHERE upd.kind = 'finish'\n",
        "the group commit consumes signals before the cascade purges the inboxes of the "
        "descendants it cancels (else the batch fails whole on a signal deleted twice)",
        EFFECTS,
    ),
    m(
        "retry.lock_order",
        R,
        "instance_retry",
        "    ORDER BY i.id\n    FOR UPDATE OF i\n",
        "    ORDER BY i.id DESC\n    FOR UPDATE OF i\n",
        "lock order: retry locks the parent before the child it puts back (id order)",
        LOCKS,
    ),
    m(
        "retry.lock_parent",
        R,
        "instance_retry",
        "SELECT ARRAY[t.id, t.parent_id] FROM __schema__.instances t",
        "SELECT ARRAY[t.id] FROM __schema__.instances t",
        "retry locks the parent whose pending count it raises, and reads it from that lock",
        ACT,
        LOCKS,
    ),
    # -- schema: indexes and instances_ended --------------------------------------------------
    m(
        "index.key_unique",
        SCHEMA,
        "",
        "CREATE UNIQUE INDEX IF NOT EXISTS instances_key",
        "CREATE INDEX IF NOT EXISTS instances_key",
        "uniqueness: the key index is unique",
        START,
    ),
    m(
        "index.concurrency_unique",
        SCHEMA,
        "",
        "CREATE UNIQUE INDEX IF NOT EXISTS instances_concurrency_active",
        "CREATE INDEX IF NOT EXISTS instances_concurrency_active",
        "concurrency keys: the database refuses two executing rows of a key",
        CONCURRENCY,
    ),
    m(
        "ended.cascade",
        ENDED,
        "fn:instances_ended",
        "WHERE c.parent_id = ANY (ended || cascaded)\n",
        "WHERE c.parent_id = ANY (ended || cascaded) AND false\n",
        "cancel cascades to live descendants",
        CHILDREN,
        EFFECTS,
    ),
    m(
        "ended.cascade_live_only",
        ENDED,
        "fn:instances_ended",
        [
            (
                "ANY (ended || cascaded)\n"
                "              AND c.status IN ('available', 'executing', 'awaiting', 'waiting')",
                "ANY (ended || cascaded)\n"
                "              AND c.status IN ('available', 'executing', 'awaiting', 'waiting', "
                "'done')",
            ),
            (
                "JOIN tree ON c.parent_id = tree.id\n"
                "            WHERE c.status IN ('available', 'executing', 'awaiting', 'waiting')",
                "JOIN tree ON c.parent_id = tree.id\n"
                "            WHERE c.status IN ('available', 'executing', 'awaiting', 'waiting', "
                "'done')",
            ),
            (
                "JOIN tree ON tree.id = i.id\n"
                "            WHERE i.status IN ('available', 'executing', 'awaiting', 'waiting')",
                "JOIN tree ON tree.id = i.id\n"
                "            WHERE i.status IN ('available', 'executing', 'awaiting', 'waiting', "
                "'done')",
            ),
        ],
        "",
        "the cascade cancels live descendants only (a child that ended done stays done)",
        GUARDS,
        CHILDREN,
        MACHINE,
    ),
    m(
        "ended.cascade_rounds",
        ENDED,
        "fn:instances_ended",
        "EXIT WHEN cardinality(more) = 0;\n        cascaded := cascaded || more;",
        "cascaded := cascaded || more;\n        EXIT;",
        "the cascade goes round again for children a spawn committed while it waited",
        CASCADE,
        MACHINE,
    ),
    m(
        "ended.purge",
        ENDED,
        "fn:instances_ended",
        "    DELETE FROM __schema__.signals WHERE instance_id = ANY (everything);\n",
        "",
        "purge: an ended instance's inbox is deleted",
        AWAITS,
        EFFECTS,
    ),
    m(
        "ended.count_by_n",
        ENDED,
        "fn:instances_ended",
        "SET pending_children = p.pending_children - parents.n,",
        "SET pending_children = p.pending_children - 1,",
        "each ended child counts its parent down once",
        EFFECTS,
        MACHINE,
    ),
    m(
        "ended.count_live_parents",
        ENDED,
        "fn:instances_ended",
        "        WHERE p.status IN ('available', 'executing', 'awaiting', 'waiting')\n"
        "        ORDER BY p.id",
        "        ORDER BY p.id",
        "ended children count down live parents only",
        EFFECTS,
        equivalent="a parent that is no longer live is never woken (only a waiting parent is), "
        "and nothing reads the pending count of an ended instance",
    ),
    m(
        "ended.lock_order",
        ENDED,
        "fn:instances_ended",
        "ORDER BY i.id\n            FOR UPDATE OF i\n        ),\n        cancelled",
        "ORDER BY i.id DESC\n            FOR UPDATE OF i\n        ),\n        cancelled",
        "lock order: the cascade locks descendants by id",
        LOCKS,
    ),
    m(
        "ended.announce",
        ENDED,
        "fn:instances_ended",
        [
            ("    PERFORM pg_notify(channel, 't:' || e) FROM unnest(everything) AS e;\n", ""),
            ("        PERFORM pg_notify(channel, 't:' || e) FROM unnest(ended) AS e;\n", ""),
        ],
        "",
        "every end is announced to result() waiters",
        RESULT,
        EFFECTS,
    ),
    m(
        "ended.fast_children",
        ENDED,
        "fn:instances_ended",
        "    IF NOT EXISTS (SELECT 1 FROM __schema__.instances c\n"
        "                   WHERE c.parent_id = ANY (ended)\n"
        "                     AND c.status IN ('available', 'executing', 'awaiting', 'waiting'))\n"
        "       AND NOT EXISTS",
        "    IF NOT EXISTS",
        "the fast path is taken only when no live child is to be cancelled",
        CASCADE,
        CHILDREN,
        INTERLEAVE,
    ),
    m(
        "ended.fast_inbox",
        ENDED,
        "fn:instances_ended",
        "       AND NOT EXISTS (SELECT 1 FROM __schema__.signals s "
        "WHERE s.instance_id = ANY (ended))\n",
        "",
        "the fast path is taken only when no inbox is to be purged",
        AWAITS,
        EFFECTS,
        INTERLEAVE,
    ),
    m(
        "ended.fast_parent",
        ENDED,
        "fn:instances_ended",
        "       AND NOT EXISTS (SELECT 1 FROM __schema__.instances e\n"
        "                       WHERE e.id = ANY (ended) AND e.parent_id IS NOT NULL) THEN",
        " THEN",
        "the fast path is taken only when no parent is to be counted down",
        CHILDREN,
        EFFECTS,
        INTERLEAVE,
    ),
    # -- decide() ---------------------------------------------------------------------------
    m(
        "decide.retry_limit",
        DECIDE,
        "def _commit",
        "if attempt + 1 >= max_attempts(spec, step):",
        "if attempt >= max_attempts(spec, step):",
        "attempt counting: retry() on the last attempt fails",
        DECIDE_PROPS,
        DECIDE_TABLE,
    ),
    m(
        "decide.failure_limit",
        DECIDE,
        "def _failure",
        "or attempt + 1 >= max_attempts(spec, step)",
        "or attempt >= max_attempts(spec, step)",
        "attempt counting: an error on the last attempt fails",
        DECIDE_PROPS,
        DECIDE_TABLE,
    ),
    m(
        "decide.handler_once",
        DECIDE,
        "def decide",
        "if spec.handler is not None and not handled:",
        "if spec.handler is not None:",
        "the handler decides once",
        DECIDE_PROPS,
        DECIDE_TABLE,
    ),
    m(
        "decide.goto_consumes",
        DECIDE,
        "def _commit",
        "keep, consumed=awaited, limit=limit)",
        "keep, consumed=(), limit=limit)",
        "consumption: a goto consumes what the step saw",
        DECIDE_PROPS,
        DECIDE_TABLE,
    ),
    m(
        "decide.goto_park_consumes",
        DECIDE,
        "def _commit",
        "park(target, data, consumed=awaited,",
        "park(target, data, consumed=(),",
        "consumption: a goto into an await consumes what the step saw",
        DECIDE_PROPS,
    ),
    m(
        "decide.spawn_consumes",
        DECIDE,
        "def _commit",
        "tuple(children), awaited, limit)",
        "tuple(children), (), limit)",
        "consumption: a spawn consumes what the step saw",
        DECIDE_PROPS,
    ),
    m(
        "decide.reawait_seen",
        DECIDE,
        "def _commit",
        "seen=max((seen, *awaited))",
        "seen=seen",
        "a reawait raises its seen mark past what it saw",
        DECIDE_PROPS,
        DECIDE_TABLE,
    ),
    m(
        "decide.reawait_deadline",
        DECIDE,
        "def park",
        "keep_deadline = reawait and not timed_out",
        "keep_deadline = reawait",
        "deadline: a reawait after its deadline waits for signals only",
        DECIDE_PROPS,
    ),
    m(
        "decide.reawait_timeout",
        DECIDE,
        "def park",
        "timeout = None if reawait and timed_out else step.awaits.timeout",
        "timeout = step.awaits.timeout",
        "deadline: a reawait after its deadline sets no new one",
        DECIDE_PROPS,
    ),
    m(
        "decide.keep_claim_limit",
        DECIDE,
        "def _commit",
        "target.awaits is None and limit.name is None and outcome.delay",
        "target.awaits is None and outcome.delay",
        "a goto into a rate-limited step goes through the limiter",
        DECIDE_PROPS,
        DECIDE_TABLE,
    ),
    m(
        "decide.keep_claim_delay",
        DECIDE,
        "def _commit",
        "limit.name is None and outcome.delay is None",
        "limit.name is None",
        "a delayed goto gives the claim back",
        DECIDE_PROPS,
        DECIDE_TABLE,
    ),
    m(
        "decide.goto_delay_park",
        DECIDE,
        "def _commit",
        "if target.awaits is not None and outcome.delay is None:",
        "if target.awaits is not None:",
        "a delayed goto into an await waits for the delay",
        DECIDE_PROPS,
        DECIDE_TABLE,
    ),
    m(
        "decide.goto_keep_children",
        DECIDE,
        "def _commit",
        "limit=limit, keep_children=False)",
        "limit=limit, keep_children=True)",
        "a goto into an await drops ctx.children",
        DECIDE_PROPS,
    ),
    m(
        "decide.reawait_needs_await",
        DECIDE,
        "def _commit",
        '        if step.awaits is None:\n            raise InvalidOutcome(f"step {step.name!r} '
        "returned reawait()",
        '        if False:\n            raise InvalidOutcome(f"step {step.name!r} '
        "returned reawait()",
        "reawait() in a step that awaits nothing takes the error path",
        DECIDE_PROPS,
        DECIDE_TABLE,
    ),
    # -- the read side and the edges (issue K, item 6): what the operator sees and sends ----
    # The six an outside mutation run found untested, then blocked_by, the listings, the
    # CLI's and the dashboard's checks, the deploy check and the nodes.
    m(
        "recheck.timed_out_names",
        SCHEMA,
        "fn:instances_parked",
        "WHERE s.instance_id = i.id AND s.name = ANY (i.await_names)\n"
        "                  AND s.id > i.await_seen)",
        "WHERE s.instance_id = i.id\n                  AND s.id > i.await_seen)",
        "park recheck: only a signal of an awaited name makes a wake not timed out",
        SIGNAL_GUARDS,
        AWAITS,
    ),
    m(
        "blocked.backoff_attempt",
        SCHEMA,
        "fn:blocked_by",
        "WHEN i.attempt > 0 AND i.error IS NOT NULL THEN 'backoff'",
        "WHEN i.error IS NOT NULL THEN 'backoff'",
        "blocked_by: backoff is a retry after a failed attempt, not any row with an old error",
        BLOCKED,
    ),
    m(
        "codec.nul_backslashes",
        "src/gendurable/codec.py",
        "",
        r'_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")',
        r'_NUL = re.compile(rb"(?<!\\)\\u0000")',
        "a NUL is refused after any even number of backslashes (an escaped backslash)",
        BAD_KEYS,
    ),
    m(
        "nodes.live_expiry",
        N,
        "nodes_live",
        "WHERE expires_at >= coalesce(:now::timestamptz, now())\n",
        "",
        "`status` and `signal` see live nodes only, not a dead one not yet pruned",
        INSPECT,
        ACT,
    ),
    m(
        "dashboard.nodes_expiry",
        DASH_SQL,
        "nodes_page",
        "WHERE expires_at >= coalesce(:now::timestamptz, now())\n  AND ",
        "WHERE ",
        "the dashboard lists live nodes only, not a dead one not yet pruned",
        WEB_PAGES,
    ),
    m(
        "deploy.live_waiting",
        DEPLOY_SQL,
        "check_live_steps",
        "WHERE status IN __live__",
        "WHERE status IN ('available', 'executing', 'awaiting')",
        "deploy check: a parent waiting for children at a removed step is reported",
        DEPLOY,
    ),
    m(
        "notifier.wake_waiters",
        "src/gendurable/engine/notifier.py",
        "",
        "for waiters in list(self._waiters.values()):",
        "for waiters in []:",
        "result(): a listener back from a drop wakes every pending waiter to look again",
        LISTENER,
    ),
    m(
        "listener.reconnect_hook",
        "src/gendurable/db/listener.py",
        "",
        "                self.on_reconnect()\n",
        "",
        "result(): the listener says it is back (notifications were lost meanwhile)",
        LISTENER,
    ),
    m(
        "notifier.end_dispatch",
        "src/gendurable/engine/notifier.py",
        "",
        'elif kind == "t":',
        'elif kind == "ended":',
        "result(): an announced end wakes its waiters",
        RESULT,
    ),
    # -- blocked_by ---------------------------------------------------------------------------
    m(
        "blocked.live_nodes",
        SCHEMA,
        "fn:blocked_by",
        "FROM __schema__.nodes n WHERE n.expires_at >= as_of\n",
        "FROM __schema__.nodes n\n",
        "blocked_by: a node past its expiry runs and knows nothing",
        BLOCKED,
    ),
    m(
        "blocked.throttled",
        SCHEMA,
        "fn:blocked_by",
        "CASE WHEN i.throttled THEN 'rate_limit'",
        "CASE WHEN false THEN 'rate_limit'",
        "blocked_by: a row the limiter deferred says rate_limit, not scheduled",
        BLOCKED,
    ),
    m(
        "blocked.children_latest",
        SCHEMA,
        "fn:blocked_by",
        "WHERE k.parent_id = i.id AND k.id >= coalesce(i.children_from, 0)",
        "WHERE k.parent_id = i.id",
        "blocked_by: the children counted are the latest spawn's",
        BLOCKED,
    ),
    m(
        "blocked.not_due",
        SCHEMA,
        "fn:blocked_by",
        "    WHERE i.status = 'available' AND i.run_at > as_of\n",
        "    WHERE i.status = 'available'\n",
        "blocked_by: only a row not yet due is scheduled",
        BLOCKED,
    ),
    m(
        "blocked.unknown_step",
        SCHEMA,
        "fn:blocked_by",
        "NOT EXISTS (SELECT 1 FROM live n WHERE n.workflows -> i.workflow -> 'steps' ? i.step)",
        "NOT EXISTS (SELECT 1 FROM live n WHERE n.workflows ? i.workflow)",
        "blocked_by: a step no live node knows is unknown, even when the workflow is known",
        BLOCKED,
    ),
    m(
        "blocked.rolling_deploy",
        SCHEMA,
        "fn:blocked_by",
        "WHERE n.queues ? i.queue AND n.workflows -> i.workflow -> 'steps' ? i.step)",
        "WHERE n.workflows -> i.workflow -> 'steps' ? i.step)",
        "blocked_by: some node must both run the queue and know the step",
        BLOCKED,
    ),
    m(
        "blocked.concurrency_executing",
        SCHEMA,
        "fn:blocked_by",
        "WHERE j.concurrency_key = i.concurrency_key AND j.status = 'executing'",
        "WHERE j.concurrency_key = i.concurrency_key",
        "blocked_by: a concurrency key is held by an executing instance only",
        BLOCKED,
    ),
    m(
        "blocked.rate_full_bucket",
        SCHEMA,
        "fn:blocked_by",
        "OR i.weight > cfg.burst OR b.tokens_now < i.weight)",
        "OR i.weight > cfg.burst OR true)",
        "blocked_by: a bucket holding the row's weight does not block it",
        BLOCKED,
    ),
    m(
        "blocked.rate_short_bucket",
        SCHEMA,
        "fn:blocked_by",
        "OR i.weight > cfg.burst OR b.tokens_now < i.weight)",
        "OR i.weight > cfg.burst)",
        "blocked_by: a bucket short of the row's weight blocks it",
        BLOCKED,
    ),
    m(
        "blocked.rate_refill_cap",
        SCHEMA,
        "fn:blocked_by",
        "SELECT least(cfg.burst::double precision,",
        "SELECT greatest(0::double precision,",
        "blocked_by: a bucket refills up to its burst only",
        BLOCKED,
        equivalent="a bucket blocks a row only when the row's weight fits the burst and the "
        "refilled tokens are below that weight, so below the burst too: capping them there "
        "changes neither whether the row is blocked nor the `until` computed from them",
    ),
    m(
        "blocked.rank",
        SCHEMA,
        "fn:blocked_by",
        "ORDER BY c.rank\nLIMIT 1",
        "ORDER BY c.rank DESC\nLIMIT 1",
        "blocked_by: the first obstacle in the claim's order is named",
        BLOCKED,
    ),
    # -- the listings -------------------------------------------------------------------------
    m(
        "inspect.oldest_due_available",
        INSPECT_SQL,
        "status_counts",
        "FILTER (WHERE i.status = 'available' AND i.run_at <= now.t)",
        "FILTER (WHERE i.run_at <= now.t)",
        "`status`: only available rows are due",
        INSPECT,
    ),
    m(
        "inspect.oldest_due_due",
        INSPECT_SQL,
        "status_counts",
        "FILTER (WHERE i.status = 'available' AND i.run_at <= now.t)",
        "FILTER (WHERE i.status = 'available')",
        "`status`: a row scheduled later is not due",
        INSPECT,
        WEB_PAGES,
    ),
    m(
        "inspect.list_workflow",
        INSPECT_SQL,
        "instances_list",
        "(:workflow::text IS NULL OR workflow = :workflow)",
        "(:workflow::text IS NULL OR true)",
        "`ls` and the dashboard's list filter by workflow",
        INSPECT,
        WEB_PAGES,
    ),
    m(
        "inspect.list_status",
        INSPECT_SQL,
        "instances_list",
        "(:statuses::text[] IS NULL OR status::text = ANY (:statuses::text[]))",
        "(:statuses::text[] IS NULL OR true)",
        "`ls` and the dashboard's list filter by status",
        INSPECT,
        WEB_PAGES,
    ),
    m(
        "inspect.list_queue",
        INSPECT_SQL,
        "instances_list",
        "(:queue::text IS NULL OR queue = :queue)",
        "(:queue::text IS NULL OR true)",
        "`ls` and the dashboard's list filter by queue",
        INSPECT,
        WEB_PAGES,
    ),
    m(
        "inspect.list_key_prefix",
        INSPECT_SQL,
        "instances_list",
        "(:key_prefix::text IS NULL OR starts_with(key, :key_prefix))",
        "(:key_prefix::text IS NULL OR true)",
        "`ls` and the dashboard's list filter by key prefix",
        INSPECT,
        WEB_PAGES,
    ),
    m(
        "inspect.list_after",
        INSPECT_SQL,
        "instances_list",
        "(:before_id::bigint IS NULL OR id < :before_id)",
        "(:before_id::bigint IS NULL OR id <= :before_id)",
        "`ls --after` and the dashboard's next page start after the last row shown",
        INSPECT,
        WEB_PAGES,
    ),
    m(
        "inspect.key_prefers_live",
        INSPECT_SQL,
        "instances_with_key",
        "ORDER BY workflow, (status IN __live__) DESC,",
        "ORDER BY workflow,",
        "a key names its live instance before a later ended one",
        INSPECT,
    ),
    m(
        "dashboard.throughput_window",
        DASH_SQL,
        "throughput_by_minute",
        "  AND i.finished_at > now.t - make_interval(mins => :minutes)\n",
        "",
        "the throughput chart reads the ends of its window only",
        DASH_STATEMENTS,
        WEB_PAGES,
    ),
    m(
        "dashboard.oldest_first",
        DASH_SQL,
        "queue_oldest_due",
        "    ORDER BY i.run_at, i.id\n    LIMIT 1\n) o ON true",
        "    ORDER BY i.run_at DESC, i.id\n    LIMIT 1\n) o ON true",
        "the overview names the due row that waited longest",
        WEB_PAGES,
    ),
    m(
        "dashboard.oldest_across_priorities",
        DASH_SQL,
        "queue_oldest_due",
        "ORDER BY p.queue, o.run_at, o.id;",
        "ORDER BY p.queue, o.run_at DESC, o.id;",
        "the overview names the due row that waited longest, whatever its priority",
        WEB_PAGES,
    ),
    m(
        "dashboard.children_after",
        DASH_SQL,
        "children_page",
        "(:after_id::bigint IS NULL OR id > :after_id)",
        "(:after_id::bigint IS NULL OR id >= :after_id)",
        "the instance page's next page of children starts after the last one shown",
        WEB_PAGES,
    ),
    m(
        "dashboard.inbox_after",
        DASH_SQL,
        "inbox_page",
        "(:after_id::bigint IS NULL OR id > :after_id)",
        "(:after_id::bigint IS NULL OR id >= :after_id)",
        "the instance page's next page of the inbox starts after the last signal shown",
        WEB_PAGES,
    ),
    # -- `status` -----------------------------------------------------------------------------
    m(
        "status.nodes_only",
        CLI + "inspection.py",
        "",
        "    if args.nodes:\n",
        "    if False:\n",
        "`status --nodes` lists the nodes only",
        INSPECT,
    ),
    m(
        "status.due_summed",
        CLI + "inspection.py",
        "",
        "entry[0] += r.count",
        "entry[0] = r.count",
        "`status`: a queue's due rows are summed over its workflows",
        INSPECT,
    ),
    m(
        "status.behind_oldest",
        CLI + "inspection.py",
        "",
        "entry[1] = behind if entry[1] is None else max(entry[1], behind)",
        "entry[1] = behind",
        "`status`: a queue is as far behind as its oldest due row of any workflow",
        INSPECT,
    ),
    # -- the CLI's checks ---------------------------------------------------------------------
    m(
        "cli.id_of_workflow",
        CLI + "session.py",
        "",
        "if workflow is not None and row.workflow != workflow:",
        "if False:",
        "an id with --workflow names an instance of that workflow only",
        INSPECT,
        ACT,
    ),
    m(
        "cli.digits_as_key",
        CLI + "session.py",
        "",
        "if target.isdigit() and not args.key:",
        "if target.isdigit():",
        "--key reads an all-digit target as a key",
        INSPECT,
        ACT,
    ),
    m(
        "cli.key_ambiguous",
        CLI + "session.py",
        "",
        "    if len(rows) > 1:\n",
        "    if False:\n",
        "a key used by several workflows needs --workflow",
        INSPECT,
        ACT,
    ),
    m(
        "cli.signal_digits_as_key",
        CLI + "act.py",
        "",
        "by_id = args.target.isdigit() and not args.key",
        "by_id = args.target.isdigit()",
        "`signal --key` reads an all-digit target as a key",
        ACT,
    ),
    m(
        "cli.signal_name_checked",
        CLI + "act.py",
        "",
        "            data = await payload_by_nodes(store, workflow, name, payload)\n",
        "            data = msgspec.json.encode(payload)\n",
        "`signal` checks the name and payload against the live nodes before storing anything",
        ACT,
    ),
    m(
        "cli.cancel_not_live",
        CLI + "act.py",
        "",
        "    if cascaded is None:\n",
        "    if False:\n",
        "`cancel` of an ended instance fails and says so",
        ACT,
    ),
    m(
        "cli.check_exit",
        CLI + "check.py",
        "",
        "return 0 if report.ok else EXIT_STRANDS",
        "return 0",
        "`gendurable check` exits 1 when a deploy would strand rows",
        DEPLOY_COMMAND,
    ),
    m(
        "signal_check.awaited_by_code",
        "src/gendurable/signal_check.py",
        "",
        "    if not awaited:\n",
        "    if False:\n",
        "with the code (--app, the dashboard), a name no step awaits is refused",
        WEB_ACTIONS,
        ACT,
    ),
    m(
        "signal_check.no_engine",
        "src/gendurable/signal_check.py",
        "",
        "    found = await recorded_or_refused(\n"
        "        store,\n"
        "        workflow,\n"
        '        "the signal cannot be checked: pass --app MODULE:ENGINE to check it against '
        'the code",\n'
        "    )\n",
        "    found = await recorded(store, workflow)\n"
        "    if found is None:\n"
        "        return payload_untyped(name, payload)\n",
        "without the code, a workflow no live node knows cannot have its signals checked",
        ACT,
        WEB_ACTIONS,
    ),
    m(
        "signal_check.name_declared",
        "src/gendurable/signal_check.py",
        "",
        "    if name not in names:\n",
        "    if False:\n",
        "without the code, a name no live node declares is refused",
        ACT,
        WEB_ACTIONS,
    ),
    # -- the dashboard's checks ---------------------------------------------------------------
    m(
        "csrf.fetch_site",
        WEB + "csrf.py",
        "",
        'if fetch_site is not None and fetch_site not in ("same-origin", "none"):',
        "if False:",
        "CSRF: a form a browser says came from another site is refused",
        WEB_INPUTS,
        WEB_ACTIONS,
    ),
    m(
        "csrf.fetch_site_own",
        WEB + "csrf.py",
        "",
        '("same-origin", "none")',
        '("same-origin",)',
        "CSRF: a request the user made (Sec-Fetch-Site: none) is not another site's",
        WEB_INPUTS,
        WEB_ACTIONS,
    ),
    m(
        "csrf.opaque_origin",
        WEB + "csrf.py",
        "",
        'if origin == "null":',
        "if False:",
        "CSRF: a form from an opaque origin (a sandboxed frame) is refused as such",
        WEB_INPUTS,
        WEB_ACTIONS,
    ),
    m(
        "csrf.origin_host",
        WEB + "csrf.py",
        "",
        "if urlsplit(origin).netloc not in ours:",
        "if False:",
        "CSRF: a form from another origin is refused",
        WEB_INPUTS,
        WEB_ACTIONS,
    ),
    m(
        "csrf.forwarded_host",
        WEB + "csrf.py",
        "",
        'ours = {headers.get("host"), headers.get("x-forwarded-host")} - {None}',
        'ours = {headers.get("host")} - {None}',
        "CSRF: behind a proxy the forwarded host is the dashboard's own",
        WEB_INPUTS,
    ),
    m(
        "csrf.cookie_shape",
        WEB + "csrf.py",
        "",
        "    cookie = valid_cookie(cookie)\n",
        "",
        "CSRF: a cookie this dashboard could not have set is refused",
        WEB_INPUTS,
        WEB_ACTIONS,
    ),
    m(
        "csrf.token_match",
        WEB + "csrf.py",
        "",
        "if not form_token or not hmac.compare_digest(form_token, token(secret, cookie)):",
        "if not form_token:",
        "CSRF: the form's token must be the cookie's",
        WEB_INPUTS,
        WEB_ACTIONS,
    ),
    m(
        "csrf.secret",
        WEB + "csrf.py",
        "",
        "hmac.new(secret, cookie.encode()",
        'hmac.new(b"", cookie.encode()',
        "CSRF: tokens are signed with the dashboard's secret",
        WEB_INPUTS,
        WEB_ACTIONS,
    ),
    m(
        "web.actions_switch",
        WEB + "actions.py",
        "",
        "    site.require_actions()\n    id = path_id(request)\n",
        "    id = path_id(request)\n",
        "a read-only dashboard refuses every action",
        WEB_ACTIONS,
    ),
    m(
        "web.read_only",
        WEB + "site.py",
        "",
        "if not self.settings.allow_actions:",
        "if False:",
        "actions are refused unless allowed",
        WEB_ACTIONS,
    ),
    m(
        "web.csrf_checked",
        WEB + "site.py",
        "",
        "        csrf.check(\n",
        "        (lambda *_, **__: None)(\n",
        "every action passes the CSRF check",
        WEB_ACTIONS,
    ),
    m(
        "web.form_only",
        WEB + "site.py",
        "",
        "if content_type != FORM_TYPE:",
        "if False:",
        "an action is a form post",
        WEB_ACTIONS,
    ),
    m(
        "web.signal_name_required",
        WEB + "actions.py",
        "",
        "            if name is None:\n",
        "            if False:\n",
        "a signal without a name is refused as such",
        WEB_ACTIONS,
    ),
    m(
        "web.signal_typed",
        WEB + "actions.py",
        "",
        "data = payload_by_code(spec, name, payload)",
        "data = payload_untyped(name, payload)",
        "with the code, a signal's payload is checked against its declared type",
        WEB_ACTIONS,
    ),
    m(
        "web.signal_by_nodes",
        WEB + "actions.py",
        "",
        "                data = await payload_by_nodes(store, workflow, name, payload)\n",
        "                data = payload_by_code.__globals__['payload_untyped'](name, payload)\n",
        "without the code, a signal's name and payload are checked against the live nodes",
        WEB_ACTIONS,
    ),
    m(
        "web.cancel_not_live",
        WEB + "actions.py",
        "",
        "        if cascaded is None:\n",
        "        if False:\n",
        "cancelling an ended instance is refused and says so",
        WEB_ACTIONS,
    ),
    m(
        "web.retry_refused",
        WEB + "actions.py",
        "",
        "        if row.retried is None:\n",
        "        if False:\n",
        "a refused retry says why instead of reporting success",
        WEB_ACTIONS,
    ),
    m(
        "params.text_length",
        WEB + "params.py",
        "def text",
        "    if len(value) > MAX_TEXT:\n",
        "    if False:\n",
        "dashboard input: texts are 200 characters at most",
        WEB_INPUTS,
        WEB_PAGES,
    ),
    m(
        "params.text_control",
        WEB + "params.py",
        "def text",
        "if any(ord(c) < 32 or ord(c) == 127 for c in value):",
        "if False:",
        "dashboard input: no control characters",
        WEB_INPUTS,
        WEB_PAGES,
    ),
    m(
        "params.id_ascii",
        WEB + "params.py",
        "def identifier",
        "if not value.isascii() or not value.isdigit():",
        "if not value.isdigit():",
        "dashboard input: an id is ASCII digits",
        WEB_INPUTS,
        WEB_PAGES,
    ),
    m(
        "params.id_range",
        WEB + "params.py",
        "def identifier",
        "if not 1 <= number <= MAX_ID:",
        "if not 0 <= number <= MAX_ID:",
        "dashboard input: an id is a positive bigint",
        WEB_INPUTS,
        WEB_PAGES,
    ),
    m(
        "params.status_known",
        WEB + "params.py",
        "",
        "            if status not in ALL_STATUSES:\n",
        "            if False:\n",
        "dashboard input: a status filter names a status",
        WEB_INPUTS,
        WEB_PAGES,
    ),
    m(
        "params.page_size",
        WEB + "params.py",
        "",
        "if raw not in {str(n) for n in PAGE_SIZES}:",
        "if False:",
        "dashboard input: a page holds 20, 50, 100 or 200 rows",
        WEB_INPUTS,
        WEB_PAGES,
    ),
    m(
        "params.unknown_filter",
        WEB + "params.py",
        "",
        "        if unknown:\n",
        "        if False:\n",
        "dashboard input: an unknown filter is refused, not ignored",
        WEB_INPUTS,
        WEB_PAGES,
    ),
    m(
        "params.query_once",
        WEB + "params.py",
        "def _one",
        "    if len(values) > 1:\n",
        "    if False:\n",
        "dashboard input: a filter given twice is refused",
        WEB_INPUTS,
        WEB_PAGES,
    ),
    m(
        "params.form_once",
        WEB + "params.py",
        "def parse_form",
        "        if len(values) > 1:\n",
        "        if False:\n",
        "dashboard input: a form field given twice is refused",
        WEB_INPUTS,
        WEB_ACTIONS,
    ),
    m(
        "params.payload_size",
        WEB + "params.py",
        "def payload_json",
        "    if len(data) > MAX_PAYLOAD:\n",
        "    if False:\n",
        "dashboard input: a signal payload is 64 KiB at most",
        WEB_ACTIONS,
    ),
    # -- the deploy check ---------------------------------------------------------------------
    m(
        "deploy.live_executing",
        DEPLOY_SQL,
        "check_live_steps",
        "WHERE status IN __live__",
        "WHERE status IN ('available', 'awaiting', 'waiting')",
        "deploy check: a row executing at a removed step is reported",
        DEPLOY,
    ),
    m(
        "deploy.live_awaiting",
        DEPLOY_SQL,
        "check_live_steps",
        "WHERE status IN __live__",
        "WHERE status IN ('available', 'executing', 'waiting')",
        "deploy check: a row parked at a removed step is reported",
        DEPLOY,
    ),
    m(
        "deploy.awaited_parked",
        DEPLOY_SQL,
        "check_awaited_names",
        "WHERE i.status = 'awaiting'\n",
        "",
        "deploy check: only a parked row awaits its names (a woken one keeps them, unread)",
        DEPLOY,
    ),
    m(
        "deploy.signal_declared",
        "src/gendurable/deploy_check.py",
        "",
        "if step.awaits is None or r.name not in step.awaits.names:",
        "if step.awaits is None:",
        "deploy check: a parked row awaiting a name its step dropped is reported",
        DEPLOY,
    ),
    m(
        "deploy.sample_oldest",
        DEPLOY_SQL,
        "check_states_oldest",
        "ORDER BY updated_at, id",
        "ORDER BY updated_at DESC, id",
        "deploy check: the sample is the states written longest ago",
        DEPLOY,
    ),
    m(
        "deploy.sample_live",
        DEPLOY_SQL,
        "check_states_oldest",
        "AND status IN __live__\n",
        "\n",
        "deploy check: the sample decodes live states only",
        DEPLOY,
    ),
    m(
        "deploy.page_live",
        DEPLOY_SQL,
        "check_states_page",
        "AND status IN __live__\n",
        "\n",
        "deploy check --full decodes live states only",
        DEPLOY,
    ),
    m(
        "deploy.page_after",
        DEPLOY_SQL,
        "check_states_page",
        "AND id > :after_id",
        "AND id >= :after_id",
        "deploy check --full reads each state once, page after page",
        DEPLOY,
    ),
    m(
        "deploy.versions_live",
        DEPLOY_SQL,
        "check_state_versions",
        "WHERE status IN __live__\n",
        "",
        "deploy check: state versions of live rows only",
        DEPLOY_UPGRADES,
    ),
    # -- nodes --------------------------------------------------------------------------------
    m(
        "nodes.prune_expired",
        N,
        "node_prune",
        "WHERE n.expires_at < now.t\n",
        "WHERE now.t IS NOT NULL\n",
        "a heartbeat prunes dead nodes only",
        NODES,
    ),
    m(
        "nodes.beat_own",
        N,
        "node_beat",
        "WHERE n.id = :id\n",
        "WHERE :id::text IS NOT NULL\n",
        "a heartbeat refreshes its own node only",
        NODES,
    ),
    m(
        "nodes.remove_own",
        N,
        "node_remove",
        "WHERE id = :id RETURNING id;",
        "WHERE :id::text IS NOT NULL RETURNING id;",
        "a stopping engine deletes its own node only",
        NODES,
    ),
    m(
        "nodes.register_again",
        "src/gendurable/maintenance/nodes.py",
        "",
        "        if not refreshed:\n",
        "        if False:\n",
        "a node pruned while alive records itself again",
        NODES,
    ),
    # -- queue pause (issue N, item 2) --------------------------------------------------
    m(
        "pause.claim_asks",
        I,
        "instance_claim",
        "      AND NOT (SELECT __schema__.queue_paused(:queue))\n",
        "",
        "a claim of a paused queue takes nothing",
        LEAN,
        PAUSE_RACES,
    ),
    m(
        "pause.insert_asks",
        I,
        "instance_insert",
        "ELSE NOT __schema__.queue_paused(:queue) END AS claimed",
        "ELSE true END AS claimed",
        "a local start in a paused queue goes in unclaimed",
        PAUSE_RACES,
    ),
    m(
        "pause.insert_unkeyed_asks",
        I,
        "instance_insert_unkeyed",
        "ELSE NOT __schema__.queue_paused(:queue) END AS claimed",
        "ELSE true END AS claimed",
        "a local unkeyed start in a paused queue goes in unclaimed",
        PAUSE_RACES,
    ),
    m(
        "pause.wake_asks",
        S,
        "signal_deliver",
        "THEN NOT __schema__.queue_paused(target.queue)",
        "THEN true",
        "a signal's local wake claims nothing in a paused queue",
        PAUSE_RACES,
    ),
    m(
        "pause.continue_asks",
        I,
        "outcome_batch",
        "CASE WHEN r.kind = 'continue' AND r.queue IN (SELECT queue FROM paused) THEN 'goto'",
        "CASE WHEN false THEN 'goto'",
        "a kept-claim move in a paused queue is committed as a plain goto",
        PAUSE_RACES,
    ),
    m(
        "pause.poll_reports",
        I,
        "queues_due",
        "SELECT q.queue, p.queue IS NOT NULL AS paused",
        "SELECT q.queue, false AS paused",
        "the poller sees a paused queue as paused, never as due",
        PAUSE_RACES,
    ),
    m(
        "pause.shared_lock",
        SCHEMA,
        "fn:queue_paused",
        "    IF NOT pg_try_advisory_xact_lock_shared(\n"
        "            hashtextextended('gendurable:pause:__schema__:' || q, 0)) THEN\n"
        "        RETURN true;\n"
        "    END IF;\n",
        "",
        "a statement starting steps holds the queue's lock shared: a pause waits for it",
        PAUSE_RACES,
    ),
    m(
        "pause.fresh_snapshot",
        SCHEMA,
        "fn:queue_paused",
        "LANGUAGE plpgsql VOLATILE AS",
        "LANGUAGE plpgsql STABLE AS",
        "the pause is read in a snapshot taken after the lock, not the caller's",
        PAUSE_RACES,
    ),
    m(
        "pause.pending_is_paused",
        SCHEMA,
        "fn:queue_paused",
        "|| q, 0)) THEN\n        RETURN true;",
        "|| q, 0)) THEN\n        RETURN false;",
        "while a pause holds or waits for the lock, the queue counts as paused",
        PAUSE_RACES,
    ),
    m(
        "pause.never_waits",
        SCHEMA,
        "fn:queue_paused",
        "    IF NOT pg_try_advisory_xact_lock_shared(\n"
        "            hashtextextended('gendurable:pause:__schema__:' || q, 0)) THEN\n"
        "        RETURN true;\n"
        "    END IF;\n",
        "    PERFORM pg_advisory_xact_lock_shared(\n"
        "            hashtextextended('gendurable:pause:__schema__:' || q, 0));\n",
        "a statement starting steps never waits for a pause",
        PAUSE_RACES,
    ),
    m(
        "pause.exclusive_lock",
        Q,
        "queue_pause",
        "    SELECT pg_advisory_xact_lock(hashtextextended('gendurable:pause:__schema__:' "
        "|| :queue, 0))",
        "    SELECT 1",
        "a pause waits for the statements starting steps of its queue",
        PAUSE_RACES,
    ),
    m(
        "pause.first_kept",
        Q,
        "queue_pause",
        "ON CONFLICT (queue) DO UPDATE SET queue = excluded.queue",
        "ON CONFLICT (queue) DO NOTHING",
        "pausing a paused queue keeps (and returns) its first pause",
        PAUSE_RACES,
    ),
    m(
        "pause.blocked_by",
        SCHEMA,
        "fn:blocked_by",
        "    WHERE i.status = 'available' AND p.queue = i.queue\n",
        "    WHERE false AND p.queue = i.queue\n",
        "blocked_by says `paused` for a waiting instance of a paused queue",
        PAUSE,
    ),
    m(
        "pause.scheduler_idle",
        "src/gendurable/engine/scheduler.py",
        "",
        "if not self.claiming or free < self.min_demand or self.queue in self.paused:",
        "if not self.claiming or free < self.min_demand:",
        "a scheduler that knows its queue paused does not even try to claim",
        PAUSE,
    ),
    m(
        "pause.no_reservation",
        "src/gendurable/engine/scheduler.py",
        "",
        "if not self.claiming or not self.drained or self.queue in self.paused:",
        "if not self.claiming or not self.drained:",
        "no local slot is reserved in a queue known paused",
        PAUSE,
    ),
    m(
        "pause.executor_goto",
        "src/gendurable/engine/executor.py",
        "",
        "and (not self.keep_claims or claim.queue in self.paused)",
        "and not self.keep_claims",
        "a step of a queue known paused does not offer to keep its claim",
        PAUSE,
    ),
    m(
        "pause.adopt_claimed_only",
        "src/gendurable/engine/client.py",
        "",
        "if inserted.created and inserted.locked_by == runner.locked_by:",
        "if inserted.created:",
        "a local start runs only if the database claimed it (not in a paused queue)",
        PAUSE,
    ),
    m(
        "pause.poller_learns",
        "src/gendurable/engine/poller.py",
        "",
        "            self.pauses.sync(paused, queues)\n",
        "            pass\n",
        "the poller tells the engine of pauses and resumes no notification announced",
        PAUSE,
    ),
    m(
        "pause.notified",
        "src/gendurable/engine/notifier.py",
        "",
        '                self.pause_changed(value, kind == "p")',
        "                pass",
        "an engine hears of a pause or resume by notification",
        PAUSE,
    ),
    m(
        "pause.resume_wakes",
        "src/gendurable/engine/pauses.py",
        "",
        "            self.known.discard(queue)\n            self.wake(queue)",
        "            self.known.discard(queue)",
        "a resume wakes the queue's scheduler",
        PAUSE,
    ),
    m(
        "pause.drain_reads",
        "src/gendurable/engine/drain.py",
        "",
        "    if pauses is not None and schedulers:  # as paused as the database says\n"
        "        await pauses.listed()\n",
        "",
        "drain() reads the pauses again",
        PAUSE,
    ),
    m(
        "pause.start_reads",
        "src/gendurable/engine/engine.py",
        "",
        "        if config.queues:  # after LISTEN: a pause from now on is announced\n"
        "            await pauses.listed()\n",
        "",
        "an engine reads the pauses when it starts",
        PAUSE,
    ),
    m(
        "pause.served_only",
        "src/gendurable/engine/pauses.py",
        "",
        "        if queue not in self.served:\n            return\n",
        "",
        "an engine keeps the pauses of its own queues only",
        PAUSE,
    ),
    m(
        "pause.cli_name_checked",
        CLI + "queues.py",
        "",
        "        return check_queue(queue)\n",
        "        return queue\n",
        "`gendurable pause` refuses a bad queue name",
        QUEUES_CLI,
    ),
    m(
        "pause.status_marked",
        CLI + "inspection.py",
        "",
        "        pauses = {p.queue: p for p in await QueueStore(store.db).queue_pauses()}\n",
        "        pauses: dict[str, StoredPause] = {}\n",
        "`gendurable status` marks paused queues",
        QUEUES_CLI,
    ),
    m(
        "pause.web_switch",
        WEB + "actions.py",
        "",
        "    site.require_actions()\n    return await site.posted_form(request)\n",
        "    return await site.posted_form(request)\n",
        "a read-only dashboard refuses to pause or resume",
        WEB_QUEUES,
    ),
    m(
        "pause.web_name_checked",
        WEB + "queue_actions.py",
        "",
        '        return check_queue(form.get("queue"))',
        '        return form.get("queue") or ""',
        "the dashboard refuses a missing or empty queue name",
        WEB_QUEUES,
    ),
    m(
        "pause.web_shown_at_once",
        WEB + "queue_actions.py",
        "",
        "    overview.forget()  # the next view shows the change at once\n",
        "",
        "after a pause or resume the overview is read again, not shown from its cache",
        WEB_QUEUES,
    ),
    # -- idempotent signals (issue N, item 3) ---------------------------------------------
    m(
        "idem.stores_once",
        S,
        "signal_deliver",
        "    WHERE NOT EXISTS (SELECT 1 FROM prior)\n",
        "",
        "a resend with the key stores nothing",
        IDEM,
    ),
    m(
        "idem.wakes_nothing",
        S,
        "signal_deliver",
        "    FROM target, now, mode, ins\n",
        "    FROM target, now, mode\n",
        "a resend wakes nothing (the instance may await that name again)",
        IDEM,
    ),
    m(
        "idem.live_target",
        S,
        "signal_deliver",
        "      AND (i.id IN (SELECT id FROM target) OR NOT EXISTS (SELECT 1 FROM target))\n",
        "",
        "a key is looked up on the live instance addressed (a new holder of the business "
        "key has keys of its own)",
        IDEM,
    ),
    m(
        "idem.address",
        S,
        "signal_deliver",
        "      AND ((:id::bigint IS NOT NULL AND i.id = :id)\n"
        "           OR (:id::bigint IS NULL AND i.key = :key AND i.key IS NOT NULL))\n"
        "      AND (i.id IN",
        "      AND (:id::bigint IS NULL OR :key IS NULL OR true)\n      AND (i.id IN",
        "a key is looked up on the instance addressed only",
        IDEM,
    ),
    m(
        "idem.workflow",
        S,
        "signal_deliver",
        "      AND i.workflow = :workflow\n",
        "      AND :workflow::text IS NOT NULL\n",
        "a key is looked up within the signal's workflow",
        IDEM,
    ),
    m(
        "idem.key_matched",
        S,
        "signal_deliver",
        "    WHERE :idempotency_key::text IS NOT NULL AND k.idempotency_key = :idempotency_key\n",
        "    WHERE :idempotency_key::text IS NOT NULL\n",
        "only the same key finds an earlier signal",
        IDEM,
    ),
    m(
        "idem.payload_compared",
        S,
        "signal_deliver",
        "(k.name = :name\n"
        "            AND k.payload_md5 = md5(coalesce(:payload::jsonb::text, ''))::uuid) AS same",
        "(k.name = :name\n            AND :payload::jsonb IS NOT NULL OR true) AS same",
        "a key reused with another payload is told apart",
        IDEM,
    ),
    m(
        "idem.name_compared",
        S,
        "signal_deliver",
        "(k.name = :name\n"
        "            AND k.payload_md5 = md5(coalesce(:payload::jsonb::text, ''))::uuid) AS same",
        "(:name::text IS NOT NULL\n"
        "            AND k.payload_md5 = md5(coalesce(:payload::jsonb::text, ''))::uuid) AS same",
        "a key reused with another name is told apart",
        IDEM,
    ),
    m(
        "idem.primary_key",
        SCHEMA,
        "",
        "    payload_md5 uuid NOT NULL,\n    PRIMARY KEY (instance_id, idempotency_key)\n",
        "    payload_md5 uuid NOT NULL\n",
        "two concurrent sends of one key store one signal",
        IDEM,
    ),
    m(
        "idem.cascade",
        G,
        "terminal_sweep",
        "    WHERE k.instance_id = d.id\n",
        "    WHERE k.instance_id = d.id AND false\n",
        "an instance's keys go with it",
        IDEM,
    ),
    m(
        "idem.run_again",
        "src/gendurable/db/engine_store.py",
        "",
        "            except asyncpg.UniqueViolationError:\n"
        "                if idempotency_key is None:\n",
        "            except ZeroDivisionError:\n                if idempotency_key is None:\n",
        "a send that lost the race to its key is run again, to find the first",
        IDEM,
    ),
    m(
        "idem.repeated",
        "src/gendurable/db/engine_store.py",
        "",
        "deliver, idempotent=idempotency_key is not None and locked_by is None",
        "deliver, idempotent=False",
        "a keyed delivery is repeated through a lost answer",
        ACKS,
    ),
    m(
        "idem.no_local_claim",
        "src/gendurable/engine/client.py",
        "",
        "        local = self.local if idempotency_key is None else None\n",
        "        local = self.local\n",
        "a keyed delivery claims nothing where it is sent (it may be repeated)",
        IDEM,
    ),
    m(
        "idem.conflict",
        "src/gendurable/engine/client.py",
        "",
        "        if not delivery.same:\n",
        "        if False:\n",
        "a key reused for another signal raises IdempotencyConflict",
        IDEM,
    ),
    m(
        "idem.key_checked",
        "src/gendurable/engine/client.py",
        "",
        "        if idempotency_key is not None:\n"
        "            check_idempotency_key(idempotency_key)\n",
        "",
        "a bad idempotency key is refused before anything is stored",
        IDEM,
    ),
    m(
        "idem.duplicate_event",
        "src/gendurable/engine/engine.py",
        "",
        "        if sent.duplicate:\n",
        "        if False:\n",
        "a resend is reported as signal.duplicate, not signal.delivered",
        IDEM,
    ),
    m(
        "idem.cli_sent",
        CLI + "act.py",
        "",
        "            idempotency_key=args.idempotency_key,\n",
        "",
        "`gendurable signal --idempotency-key` sends the key",
        QUEUES_CLI,
    ),
    m(
        "idem.cli_conflict",
        CLI + "act.py",
        "",
        "    if not row.same:\n",
        "    if False:\n",
        "`gendurable signal` refuses a key reused for another signal",
        QUEUES_CLI,
    ),
    m(
        "idem.cli_checked",
        CLI + "act.py",
        "",
        "            check_idempotency_key(args.idempotency_key)\n",
        "            pass\n",
        "`gendurable signal` refuses a bad idempotency key",
        QUEUES_CLI,
    ),
    m(
        "idem.web_sent",
        WEB + "actions.py",
        "",
        "            idempotency_key=key,\n",
        "            idempotency_key=None,\n",
        "the signal form's key is sent: a double submit stores once",
        WEB_QUEUES,
    ),
    m(
        "idem.web_conflict",
        WEB + "actions.py",
        "",
        "        if not delivered.same:\n",
        "        if False:\n",
        "the signal form sent again with another signal is refused",
        WEB_QUEUES,
    ),
    m(
        "idem.web_checked",
        WEB + "actions.py",
        "",
        "            if key is not None:\n                check_idempotency_key(key)\n",
        "",
        "a forged idempotency key is refused before anything is stored",
        WEB_QUEUES,
    ),
]


# -- applying a mutant ----------------------------------------------------------------------


def region(text: str, path: str, where: str) -> tuple[int, int]:
    """The span of `where` in `text` (see `Mutant`)."""
    if not where:
        return 0, len(text)
    if where.startswith("fn:"):
        start = text.index(f"FUNCTION __schema__.{where[3:]}(")
        return start, text.index("$fn$;", start)
    if where.startswith("def "):
        start = text.index(f"\n{where}(")
        ends = [
            i for i in (text.find("\ndef ", start + 1), text.find("\nclass ", start + 1)) if i > 0
        ]
        return start, min(ends, default=len(text))
    start = text.index(f"-- name: {where}\n")
    end = text.find("-- name: ", start + 1)
    return start, end if end > 0 else len(text)


def mutate(text: str, mutant: Mutant) -> str:
    """`text` with the mutant's edits applied; ValueError when one does not apply once."""
    start, end = region(text, mutant.path, mutant.where)
    block = text[start:end]
    for old, new in mutant.edits:
        found = block.count(old)
        if found != 1:
            raise ValueError(f"{mutant.id}: {old!r} occurs {found} times in {mutant.where!r}")
        block = block.replace(old, new)
    if mutant.path.endswith(".sql") and params(block) != params(text[start:end]):
        # A statement whose parameters changed fails on its argument count, not on the guard.
        raise ValueError(f"{mutant.id}: the edit changes the parameters of {mutant.where!r}")
    return text[:start] + block + text[end:]


def params(sql: str) -> set[str]:
    """The parameters a statement uses, `:name` (a function of the schema: `$n`), comments
    and string literals left out."""
    code = re.sub(r"--[^\n]*|'(?:[^']|'')*'", "", sql)
    return set(re.findall(r"\$\d+|(?<![\w:\])\[]):[a-z_][a-z0-9_]*", code))


# -- running the tests ----------------------------------------------------------------------


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed, survived, error
    killer: str = ""
    seconds: float = 0.0
    detail: str = ""
    tests: list[str] = field(default_factory=list)

    def json(self) -> str:
        return json.dumps(
            {
                "mutant": self.mutant.id,
                "file": self.mutant.path,
                "where": self.mutant.where,
                "guard": self.mutant.guard,
                "status": self.status,
                "killer": self.killer,
                "equivalent": self.mutant.equivalent,
                "seconds": round(self.seconds, 1),
                "tests": self.tests,
                **({"detail": self.detail} if self.detail else {}),
            }
        )


FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def pytest(copy: Path, tests: list[str], env: dict[str, str], timeout: int) -> tuple[int, str]:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-rfE",
        "-p",
        "no:cacheprovider",
        "--hypothesis-seed=1",
        f"--timeout={timeout}",
        *tests,
    ]
    shutil.rmtree(copy / ".hypothesis", ignore_errors=True)
    try:
        done = subprocess.run(
            command,
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout * 8,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        return -1, f"the run took longer than {timeout * 8}s: {exc.stdout!r:.2000}"
    return done.returncode, done.stdout + done.stderr


def run(mutant: Mutant, copy: Path, tests: list[str], env: dict[str, str], timeout: int) -> Outcome:
    target = copy / mutant.path
    original = target.read_text()
    started = time.perf_counter()
    try:
        target.write_text(mutate(original, mutant))
        code, output = pytest(copy, tests, env, timeout)
    finally:
        target.write_text(original)
    seconds = time.perf_counter() - started
    if code == 0:
        return Outcome(mutant, "survived", seconds=seconds, tests=tests)
    failed = FAILED.findall(output)
    if code == 1 and failed:
        return Outcome(mutant, "killed", failed[0], seconds, tests=tests)
    if code == -1:  # a hang is a failure the guard prevented (a deadlock or a lock wait)
        return Outcome(
            mutant, "killed", "(hung past the run's timeout)", seconds, output[-500:], tests
        )
    return Outcome(mutant, "error", f"pytest exit {code}", seconds, output[-2000:], tests)


@contextmanager
def database(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    from gendurable.embedded import EmbeddedPostgres

    server = EmbeddedPostgres()
    try:
        yield server.start()
    finally:
        server.stop()


@contextmanager
def repository_copy() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="gendurable-mutants-"))
    copy = base / "repo"
    try:
        shutil.copytree(
            ROOT,
            copy,
            ignore=shutil.ignore_patterns(
                ".venv", ".git", "site", "__pycache__", ".*_cache", ".hypothesis"
            ),
        )
        yield copy
    finally:
        shutil.rmtree(base, ignore_errors=True)


def table(outcomes: list[Outcome]) -> str:
    rows = [("mutant", "status", "killed by")]
    for o in outcomes:
        status = o.status
        if o.status == "survived" and o.mutant.equivalent:
            status = "equivalent"
        rows.append((o.mutant.id, status, o.killer or o.mutant.equivalent[:60]))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    counts = {s: sum(1 for o in outcomes if o.status == s) for s in ("killed", "survived", "error")}
    lines.append(f"{len(outcomes)} mutants: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated mutant ids (a prefix selects a group)")
    parser.add_argument("--all", action="store_true", help="run the whole suite per mutant")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--check", action="store_true", help="check every mutant applies")
    parser.add_argument("--dsn", help="PostgreSQL to test on (default: an embedded server)")
    parser.add_argument("--timeout", type=int, default=90, help="seconds per test")
    args = parser.parse_args()

    chosen = MUTANTS
    if args.only:
        wanted = args.only.split(",")
        chosen = [mu for mu in MUTANTS if any(mu.id == w or mu.id.startswith(w) for w in wanted)]
    if args.list:
        for mu in chosen:
            print(f"{mu.id:32} {mu.path[len('src/gendurable/') :]:28} {mu.guard}")
        return 0
    missing = set()
    broken = []
    for mu in chosen:
        try:
            mutate((ROOT / mu.path).read_text(), mu)
        except (ValueError, FileNotFoundError) as error:
            broken.append(str(error))
        missing.update(t for t in mu.tests if not (ROOT / t).exists())
    if missing:
        print(f"no such test files (left out of the runs): {sorted(missing)}", file=sys.stderr)
    if broken:
        print("mutants that do not apply to the sources:", *broken, sep="\n  ", file=sys.stderr)
        return 2
    if args.check:
        print(f"{len(chosen)} mutants apply", file=sys.stderr)
        return 0

    outcomes: list[Outcome] = []
    with database(args.dsn) as dsn, repository_copy() as copy:
        env = {
            **os.environ,
            "GENDURABLE_TEST_DSN": dsn,
            "GENDURABLE_PROPS": "mutants",  # property tests stop at the first failing example
            "PYTHONPATH": os.pathsep.join([str(copy / "src"), os.environ.get("PYTHONPATH", "")]),
        }
        for mu in chosen:
            tests = ["tests"] if args.all else [t for t in mu.tests if t not in missing]
            if not tests:
                outcomes.append(Outcome(mu, "error", "no test file to run"))
                print(outcomes[-1].json(), flush=True)
                continue
            outcome = run(mu, copy, tests, env, args.timeout)
            outcomes.append(outcome)
            print(outcome.json(), flush=True)
    print(table(outcomes), file=sys.stderr)
    bad = [
        o
        for o in outcomes
        if o.status == "error" or (o.status == "survived" and not o.mutant.equivalent)
    ]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
