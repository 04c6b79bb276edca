"""The valid path: what the compiler puts into a `WorkflowSpec`, and how the spec renders."""

import dataclasses
from datetime import timedelta
from typing import Any

import msgspec
import pytest

import gendurable as gd
from gendurable import done, goto
from gendurable.outcome import ChildEntry, Done, Retry
from gendurable.spec import END


class Approved(msgspec.Struct):
    by: str


class Mail(msgspec.Struct):
    to: str


@gd.workflow(queue="expenses", priority=3, max_attempts=7, lease=timedelta(minutes=2))
class Expense:
    class State(msgspec.Struct):
        amount: int
        approver: str | None = None

    class Result(msgspec.Struct):
        paid: bool

    @gd.step(start=True)
    async def submit(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.decide)

    @gd.step
    @gd.await_signals("nudge", approved=Approved, rejected=None, timeout=timedelta(days=2))
    async def decide(self, state: State, ctx: gd.Context) -> gd.Outcome:
        if ctx.timed_out:
            return gd.stop("no decision in time")
        if ctx.awaited[-1].name == "nudge":
            return gd.reawait()
        if ctx.awaited[-1].name == "rejected":
            return gd.done(Expense.Result(paid=False))
        return gd.goto("pay")

    @gd.step(rate_limit="bank", max_attempts=10, to="audit")
    def pay(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(ctx.step.replace("pay", "audit"))  # computed: declared with to=

    @gd.step(rate_limit=gd.Limit(5, per=timedelta(seconds=1)), weight=5)
    async def audit(self, state: State, ctx: gd.Context) -> gd.Outcome:
        if ctx.attempt < 3:
            return gd.retry(timedelta(seconds=1))
        return gd.spawn([Expense.new(key="sub", state=state)], then=self.settle)

    @gd.step(timeout=timedelta(seconds=30))
    async def settle(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done(Expense.Result(paid=True))


@gd.workflow(name="small")
class Small:
    @gd.step
    async def ask(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.wait)

    @gd.step
    @gd.await_signals("answer", timeout=timedelta(hours=1, minutes=30))
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        if ctx.timed_out:
            return gd.stop("no answer")
        return gd.done(ctx.awaited[0].payload)


@gd.workflow(name="bare-names")
class BareNames:
    @gd.step
    async def first(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        if ctx.attempt:
            return goto(step=self.second)
        return done()

    @gd.step
    async def second(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.spawn(children=[], then="first")


@gd.job(queue="mail")
async def send_mail(args: Mail, ctx: gd.Context) -> object:
    """Send one mail."""
    if args.to == "later":
        return gd.retry(timedelta(minutes=1))
    return {"sent": args.to}


def context(step: str = "perform") -> gd.Context:
    return gd.Context(
        id=1, key=None, workflow="wf", step=step, attempt=0, queue="default", priority=0
    )


# -- steps and the start step ------------------------------------------------------------


def test_spec_steps_in_definition_order() -> None:
    assert list(Expense.spec.steps) == ["submit", "decide", "pay", "audit", "settle"]
    assert Expense.spec.step("pay").name == "pay"
    with pytest.raises(KeyError):
        Expense.spec.step("nope")


def test_spec_start_step_explicit() -> None:
    spec = Expense.spec
    assert spec.start_step == "submit"
    assert [s.name for s in spec.steps.values() if s.start] == ["submit"]


def test_spec_start_step_defaults_to_first_defined() -> None:
    @gd.workflow(name="later-start")
    class LaterStart:
        @gd.step
        async def one(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.goto(self.two)

        @gd.step
        async def two(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

    assert LaterStart.spec.start_step == "one"
    assert LaterStart.spec.step("one").start is True
    assert LaterStart.spec.step("two").start is False


def test_spec_start_step_explicit_on_later_step() -> None:
    @gd.workflow(name="explicit-start")
    class ExplicitStart:
        @gd.step
        async def one(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

        @gd.step(start=True)
        async def two(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.goto(self.one)

    assert ExplicitStart.spec.start_step == "two"
    assert ExplicitStart.spec.to_mermaid().splitlines()[1] == "    [*] --> two"


def test_step_is_async_false_for_plain_def() -> None:
    assert Expense.spec.step("pay").is_async is False
    assert Expense.spec.step("submit").is_async is True


def test_step_options_recorded() -> None:
    pay = Expense.spec.step("pay")
    assert (pay.max_attempts, pay.timeout, pay.weight) == (10, None, 1)
    settle = Expense.spec.step("settle")
    assert (settle.max_attempts, settle.timeout) == (None, timedelta(seconds=30))
    assert Expense.spec.step("submit").awaits is None


def test_step_fn_is_the_decorated_method() -> None:
    assert Expense.spec.step("submit").fn is Expense.__dict__["submit"]


# -- edges found from the source ---------------------------------------------------------


def test_edges_goto_attribute() -> None:
    assert Expense.spec.step("submit").edges == ("decide",)


def test_edges_stop_reawait_done_goto_string_in_order() -> None:
    assert Expense.spec.step("decide").edges == (END, "decide", "pay")


def test_edges_to_declares_computed_goto() -> None:
    assert Expense.spec.step("pay").edges == ("audit",)


def test_edges_retry_self_and_spawn_then() -> None:
    assert Expense.spec.step("audit").edges == ("audit", "settle")


def test_edges_done_is_end_marker() -> None:
    assert END == "[*]"
    assert Expense.spec.step("settle").edges == (END,)


def test_edges_bare_imported_names_and_keywords() -> None:
    assert BareNames.spec.step("first").edges == ("second", END)
    assert BareNames.spec.step("second").edges == ("first",)


def test_edges_to_adds_to_source_edges_without_repeats() -> None:
    @gd.workflow(name="declared")
    class Declared:
        @gd.step(to=["b", "c", "b"])
        async def a(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.goto(self.b)

        @gd.step
        async def b(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

        @gd.step
        async def c(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

    assert Declared.spec.step("a").edges == ("b", "c")


def test_spec_edges_lists_pairs_in_step_order() -> None:
    assert Expense.spec.edges() == [
        ("submit", "decide"),
        ("decide", END),
        ("decide", "decide"),
        ("decide", "pay"),
        ("pay", "audit"),
        ("audit", "audit"),
        ("audit", "settle"),
        ("settle", END),
    ]


# -- awaits ------------------------------------------------------------------------------


def test_await_spec_names_in_order_with_types_and_timeout() -> None:
    awaits = Expense.spec.step("decide").awaits
    assert awaits is not None
    assert awaits.names == ("nudge", "approved", "rejected")
    assert dict(awaits.types) == {"nudge": None, "approved": Approved, "rejected": None}
    assert awaits.timeout == timedelta(days=2)
    assert Expense.spec.signal_names() == ("nudge", "approved", "rejected")


def test_await_spec_above_step_decorator_is_the_same() -> None:
    @gd.workflow(name="above")
    class Above:
        @gd.await_signals("go")
        @gd.step
        async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

    awaits = Above.spec.step("wait").awaits
    assert awaits is not None
    assert (awaits.names, awaits.timeout) == (("go",), None)


def test_await_spec_typed_payload_decodes_struct() -> None:
    awaits = Expense.spec.step("decide").awaits
    assert awaits is not None
    assert awaits.decode("approved", b'{"by": "ann"}') == Approved(by="ann")


@pytest.mark.parametrize("raw", [b'{"by": 5}', b"{}", b'"ann"'])
def test_await_spec_typed_payload_rejects_wrong_shape(raw: bytes) -> None:
    awaits = Expense.spec.step("decide").awaits
    assert awaits is not None
    with pytest.raises(msgspec.ValidationError):
        awaits.decode("approved", raw)


def test_await_spec_untyped_payload_decodes_plain_json() -> None:
    awaits = Expense.spec.step("decide").awaits
    assert awaits is not None
    assert awaits.decode("rejected", b'{"why": "too much"}') == {"why": "too much"}
    assert awaits.decode("nudge", b"[1, null]") == [1, None]


# -- rate limits -------------------------------------------------------------------------


def test_rate_limit_inline_registered_under_workflow_dot_step() -> None:
    audit = Expense.spec.step("audit")
    assert (audit.rate_limit, audit.weight) == ("Expense.audit", 5)
    assert dict(Expense.spec.rate_limits) == {
        "Expense.audit": gd.Limit(5, per=timedelta(seconds=1))
    }


def test_rate_limit_named_kept_as_string() -> None:
    assert Expense.spec.step("pay").rate_limit == "bank"
    assert "bank" not in Expense.spec.rate_limits


def test_rate_limit_weight_up_to_explicit_burst_allowed() -> None:
    @gd.workflow(name="bursty")
    class Bursty:
        @gd.step(rate_limit=gd.Limit(2, burst=10), weight=10)
        async def call(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

    assert Bursty.spec.step("call").rate_limit == "bursty.call"
    assert Bursty.spec.rate_limits["bursty.call"].capacity == 10


# -- workflow options and the class API --------------------------------------------------


def test_workflow_options_recorded() -> None:
    spec = Expense.spec
    assert (spec.name, spec.queue, spec.priority) == ("Expense", "expenses", 3)
    assert spec.retry.max_attempts == 7
    assert spec.retry.backoff == gd.Backoff()
    assert spec.lease == timedelta(minutes=2)
    assert spec.cls is Expense
    assert spec.is_job is False
    assert spec.handler is None


def test_workflow_defaults() -> None:
    spec = Small.spec
    assert (spec.queue, spec.priority, spec.retry.max_attempts) == ("default", 0, 5)
    assert spec.lease is None  # the engine's lease applies
    assert (spec.state_type, spec.result_type) == (None, None)
    assert spec.state_decoder.decode(b'{"any": [1]}') == {"any": [1]}


def test_workflow_name_argument_overrides_qualname() -> None:
    assert Small.spec.name == "small"
    assert Small.__name__ == "Small"


def test_workflow_state_and_result_types_decode() -> None:
    spec = Expense.spec
    assert spec.state_type is Expense.State
    assert spec.result_type is Expense.Result
    assert spec.state_decoder.decode(b'{"amount": 3}') == Expense.State(amount=3)
    assert spec.result_decoder.decode(b'{"paid": true}') == Expense.Result(paid=True)
    with pytest.raises(msgspec.ValidationError):
        spec.state_decoder.decode(b'{"amount": "3"}')


def test_workflow_state_argument_used_as_state_type() -> None:
    @gd.workflow(name="given-state", state=Mail)
    class GivenState:
        @gd.step
        async def only(self, state: Mail, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

    assert GivenState.spec.state_type is Mail


def test_workflow_handle_recorded() -> None:
    @gd.workflow(name="handled")
    class Handled:
        @gd.step
        async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

        def handle(self, error: Exception, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.stop(str(error))

    assert Handled.spec.handler is Handled.__dict__["handle"]


def test_flow_new_returns_child_entry() -> None:
    entry = Small.new(key="k-1", state={"n": 1})
    assert entry == ChildEntry("small", "k-1", {"n": 1})
    entry = Expense.new(key="e", state=Expense.State(amount=1), queue="q", priority=2)
    assert (entry.workflow, entry.queue, entry.priority) == ("Expense", "q", 2)


def test_flow_class_api_bound() -> None:
    for name in ("start", "start_many", "signal", "get", "result", "cancel", "new"):
        fn = getattr(Expense, name)
        assert callable(fn), name
        assert fn.__self__ is Expense, name  # bound to the decorated class
        assert fn.__func__ is gd.Workflow.__dict__[name].__func__, name


# -- immutability ------------------------------------------------------------------------


def test_spec_frozen_attribute_assignment_raises() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Expense.spec.name = "renamed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Expense.spec.step("pay").edges = ()  # type: ignore[misc]
    assert Expense.spec.name == "Expense"


def test_spec_frozen_mappings_reject_writes() -> None:
    spec = Expense.spec
    awaits = spec.step("decide").awaits
    assert awaits is not None
    with pytest.raises(TypeError):
        spec.steps["extra"] = spec.step("pay")  # type: ignore[index]
    with pytest.raises(TypeError):
        spec.rate_limits["extra"] = gd.Limit(1)  # type: ignore[index]
    with pytest.raises(TypeError):
        awaits.types["extra"] = None  # type: ignore[index]
    assert "extra" not in spec.steps


# -- rendering ---------------------------------------------------------------------------


def test_to_mermaid_exact_output() -> None:
    assert Small.spec.to_mermaid() == (
        "stateDiagram-v2\n"
        "    [*] --> ask\n"
        "    wait : wait\n"
        "    wait : awaits answer (timeout 1h30m)\n"
        "    ask --> wait\n"
        "    wait --> [*]\n"
    )


def test_to_mermaid_description_has_no_extra_colon() -> None:
    # Mermaid ends a state description at the next ':' (the lexer's DESCR is ":"[^:\n;]+).
    lines = [x for x in Expense.spec.to_mermaid().splitlines() if " : " in x]
    assert lines == [
        "    decide : decide",  # two descriptions: Mermaid draws the first as the title
        "    decide : awaits nudge, approved, rejected (timeout 2d)",
    ]


def test_to_mermaid_declares_step_without_edges() -> None:
    @gd.workflow(name="computed")
    class Computed:
        @gd.step
        async def first(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.goto(state["next"])

        @gd.step
        async def second(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.goto(state["next"])

    assert Computed.spec.to_mermaid() == "stateDiagram-v2\n    [*] --> first\n    second\n"


# -- the job form ------------------------------------------------------------------------


def test_job_spec_has_one_perform_step() -> None:
    spec = send_mail.spec
    assert isinstance(send_mail, gd.Job)
    assert list(spec.steps) == ["perform"]
    assert spec.start_step == "perform"
    assert spec.is_job is True
    assert spec.step("perform").edges == (END,)
    assert spec.step("perform").is_async is True
    assert (spec.name, spec.queue, spec.retry.max_attempts) == ("send_mail", "mail", 20)
    assert spec.cls is None
    assert send_mail.__doc__ == "Send one mail."


def test_job_struct_annotation_becomes_state_type() -> None:
    assert send_mail.spec.state_type is Mail
    assert send_mail.spec.state_decoder.decode(b'{"to": "ann"}') == Mail(to="ann")
    with pytest.raises(msgspec.ValidationError):
        send_mail.spec.state_decoder.decode(b'{"to": 1}')


def test_job_non_struct_annotation_stays_plain_json() -> None:
    @gd.job(name="plain")
    async def plain(args: dict[str, int], ctx: gd.Context) -> None:
        return None

    assert plain.spec.state_type is None


async def test_job_step_wraps_plain_value_in_done() -> None:
    outcome = await send_mail.spec.step("perform").fn(None, Mail(to="ann"), context())
    assert outcome == Done({"sent": "ann"})


async def test_job_step_passes_outcome_through() -> None:
    outcome = await send_mail.spec.step("perform").fn(None, Mail(to="later"), context())
    assert outcome == Retry(timedelta(minutes=1))


def test_job_plain_def_step_is_sync() -> None:
    @gd.job(name="sync-job", max_attempts=3)
    def sync_job(args: Any, ctx: gd.Context) -> Any:
        return gd.stop("no") if args == "no" else args

    step = sync_job.spec.step("perform")
    assert step.is_async is False
    assert step.fn(None, 7, context()) == Done(7)
    assert step.fn(None, "no", context()) == gd.stop("no")
    assert sync_job.spec.retry.max_attempts == 3


def test_job_new_returns_child_entry() -> None:
    assert send_mail.new(Mail(to="b"), key="m-1") == ChildEntry("send_mail", "m-1", Mail(to="b"))
