"""Every bad definition fails when it is decorated, with a message that names the workflow,
the step and what to do about it."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import msgspec
import pytest

import gendurable as gd
from gendurable.compiler import RESERVED


class Approved(msgspec.Struct):
    by: str


@contextmanager
def definition_error(*fragments: str) -> Iterator[None]:
    """Expect a `DefinitionError` whose message contains every fragment."""
    with pytest.raises(gd.DefinitionError) as info:
        yield
    message = str(info.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"{missing} not in {message!r}"


def flow_with_step(step_name: str) -> type:
    """An undecorated workflow class whose only step is called `step_name`."""

    async def fn(self: Any, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    fn.__name__ = fn.__qualname__ = step_name
    return type("Flow", (), {step_name: gd.step(fn)})


# -- shape of the workflow ---------------------------------------------------------------


def test_workflow_without_steps_names_class_and_asks_for_a_step() -> None:
    with definition_error(
        "workflow 'test_workflow_without_steps_names_class_and_asks_for_a_step.<locals>.Empty'",
        "has no steps: mark at least one method with @gd.step",
    ):

        @gd.workflow
        class Empty:
            async def helper(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


def test_workflow_two_start_steps_names_both() -> None:
    with definition_error(
        "workflow 'expense' has two start steps ('submit', 'resubmit')",
        "mark exactly one with @gd.step(start=True)",
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step(start=True)
            async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()

            @gd.step(start=True)
            async def resubmit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


@pytest.mark.parametrize("name", sorted(RESERVED))
def test_step_reserved_name_asks_for_rename(name: str) -> None:
    with definition_error(
        f"workflow 'expense', step {name!r}: the name is taken by the class API",
        "(cancel, get, handle, new, result, signal, spec, start, start_many)",
        "rename the step",
    ):
        gd.workflow(name="expense")(flow_with_step(name))


def test_step_with_mangled_name_asks_for_single_underscore() -> None:
    with definition_error(
        "workflow 'expense', step '_Expense__secret'",
        "Python mangles names starting with two underscores",
        "rename it to '_secret'",
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step
            async def __secret(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.goto(self.__secret)


def test_step_bound_under_another_name_asks_for_its_own_def() -> None:
    with definition_error(
        "workflow 'expense', step 'again': is bound to the function 'pay'",
        "goto(self.again) would go to 'pay'",
        "define it as `def again(self, state, ctx)` under its own name",
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step
            async def pay(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()

            again = pay


# -- edges -------------------------------------------------------------------------------


def test_goto_unknown_attribute_suggests_closest_step() -> None:
    with definition_error(
        "workflow 'expense', step 'submit': goes to unknown step 'pya'",
        "did you mean 'pay'?",
        "(steps: submit, pay)",
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step
            async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.goto(self.pya)

            @gd.step
            async def pay(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


def test_goto_unknown_string_suggests_closest_step() -> None:
    with definition_error(
        "workflow 'expense', step 'submit': goes to unknown step 'aprove'",
        "did you mean 'approve'?",
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step
            async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.goto(step="aprove")

            @gd.step
            async def approve(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


def test_goto_unknown_without_close_match_lists_steps_only() -> None:
    with pytest.raises(gd.DefinitionError) as info:

        @gd.workflow(name="expense")
        class Expense:
            @gd.step
            async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.goto(self.zzz)

    assert str(info.value) == (
        "workflow 'expense', step 'submit': goes to unknown step 'zzz' (steps: submit)"
    )


def test_spawn_then_unknown_step_suggests_closest_step() -> None:
    with definition_error(
        "workflow 'batch', step 'fan_out': goes to unknown step 'colect'",
        "did you mean 'collect'?",
    ):

        @gd.workflow(name="batch")
        class Batch:
            @gd.step
            async def fan_out(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.spawn([], then=self.colect)

            @gd.step
            async def collect(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


def test_spawn_positional_then_unknown_step_fails() -> None:
    with definition_error("step 'fan_out': goes to unknown step 'nowhere'"):

        @gd.workflow(name="batch")
        class Batch:
            @gd.step
            async def fan_out(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.spawn([], "nowhere")


def test_step_to_unknown_target_fails() -> None:
    with definition_error(
        "workflow 'expense', step 'submit': goes to unknown step 'nope'",
        "(steps: submit, pay)",
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step(to="nope")
            async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()

            @gd.step
            async def pay(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


# -- State and Result --------------------------------------------------------------------


def test_state_plain_nested_class_asks_for_struct() -> None:
    with definition_error(
        "workflow 'expense': State must be a msgspec.Struct subclass",
        ".State'>",
        "declare `class State(msgspec.Struct): ...` inside the workflow",
    ):

        @gd.workflow(name="expense")
        class Expense:
            class State:
                amount: int

            @gd.step
            async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


def test_state_argument_dict_asks_for_struct() -> None:
    with definition_error(
        "workflow 'expense': State must be a msgspec.Struct subclass, got <class 'dict'>",
        "declare `class State(msgspec.Struct): ...`",
    ):

        @gd.workflow(name="expense", state=dict)
        class Expense:
            @gd.step
            async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


def test_result_plain_nested_class_asks_for_struct() -> None:
    with definition_error(
        "workflow 'expense': Result type",
        ".Result'> cannot be decoded: msgspec does not know the class",
        "make it a msgspec.Struct (or a dataclass)",
    ):

        @gd.workflow(name="expense")
        class Expense:
            class Result:
                paid: bool

            @gd.step
            async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


# -- awaits ------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [None, timedelta(hours=1)])
def test_await_signals_without_names_asks_for_one(timeout: timedelta | None) -> None:
    with definition_error(
        "workflow 'expense', step 'decide': @await_signals needs at least one signal name",
        '@gd.await_signals("approved", rejected=Rejection)',
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step
            @gd.await_signals(timeout=timeout)
            async def decide(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


def test_await_signals_bare_decorator_asks_for_names() -> None:
    with definition_error(
        ".<locals>.Expense.decide': @gd.await_signals needs signal names",
        'write @gd.await_signals("approved", ...)',
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step
            @gd.await_signals  # type: ignore[arg-type]
            async def decide(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


@pytest.mark.parametrize(
    ("timeout", "shown"),
    [
        (timedelta(0), "datetime.timedelta(0)"),
        (timedelta(seconds=-1), "datetime.timedelta(days=-1, seconds=86399)"),
        (30, "30"),
    ],
)
def test_await_signals_non_positive_timeout_fails(timeout: Any, shown: str) -> None:
    with definition_error(
        "workflow 'expense', step 'decide': "
        f"@await_signals timeout must be a positive timedelta, got {shown}",
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step
            @gd.await_signals("approved", timeout=timeout)
            async def decide(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


def test_await_signals_same_name_twice_fails() -> None:
    with definition_error(
        "workflow 'expense', step 'decide': @await_signals names a signal twice",
        "('approved', 'approved')",
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step
            @gd.await_signals("approved", approved=Approved)
            async def decide(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


def test_await_signals_plain_class_payload_asks_for_struct() -> None:
    class Rejection:
        why: str

    with definition_error(
        "workflow 'expense', step 'decide': payload of signal 'rejected' type",
        "cannot be decoded: msgspec does not know the class; make it a msgspec.Struct",
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step
            @gd.await_signals(rejected=Rejection)
            async def decide(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


def test_await_signals_on_non_step_asks_for_step() -> None:
    with definition_error(
        "workflow 'expense', 'helper': @await_signals is only allowed on a step; add @gd.step"
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step
            async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()

            @gd.await_signals("approved")
            async def helper(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


# -- rate limits -------------------------------------------------------------------------


def test_weight_above_inline_limit_burst_fails() -> None:
    with definition_error(
        "workflow 'expense', step 'pay': weight 6 is above the burst 5 of its rate limit",
        "so it could never run; lower the weight or raise the limit's burst",
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step(rate_limit=gd.Limit(5, per=timedelta(seconds=1)), weight=6)
            async def pay(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


def test_weight_above_explicit_burst_fails() -> None:
    with definition_error("weight 11 is above the burst 10 of its rate limit"):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step(rate_limit=gd.Limit(100, burst=10), weight=11)
            async def pay(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


@pytest.mark.parametrize(("weight", "shown"), [(0, "0"), (-2, "-2"), (True, "True")])
def test_weight_not_positive_integer_fails(weight: Any, shown: str) -> None:
    with definition_error(
        f"workflow 'expense', step 'pay': weight must be a positive integer, got {shown}"
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step(rate_limit="bank", weight=weight)
            async def pay(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


@pytest.mark.parametrize("limit", ["", 5])
def test_rate_limit_neither_name_nor_limit_fails(limit: Any) -> None:
    with definition_error(
        "workflow 'expense', step 'pay': rate_limit must be a limit name or a gd.Limit",
        f"got {limit!r}",
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step(rate_limit=limit)
            async def pay(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


# -- signatures --------------------------------------------------------------------------


def test_step_with_too_few_parameters_shows_the_shape() -> None:
    with definition_error(
        "workflow 'expense', step 'submit': takes (self, state) but must take 3 parameters "
        "(self, state, ctx); write it as `async def step(self, state, ctx)`"
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step
            async def submit(self, state: Any) -> gd.Outcome:
                return gd.done()


def test_step_with_too_many_parameters_shows_the_shape() -> None:
    with definition_error(
        "workflow 'expense', step 'submit': takes (self, state, ctx, extra) but must take 3",
        "write it as `async def step(self, state, ctx)`",
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step
            async def submit(self, state: Any, ctx: gd.Context, extra: int) -> gd.Outcome:
                return gd.done()


def test_step_with_required_keyword_only_parameter_shows_the_shape() -> None:
    with definition_error(
        "workflow 'expense', step 'submit': takes (self, state, ctx, flag) but must take 3",
        "write it as `async def step(self, state, ctx)`",
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step
            async def submit(self, state: Any, ctx: gd.Context, *, flag: bool) -> gd.Outcome:
                return gd.done()


def test_handle_with_wrong_signature_shows_the_shape() -> None:
    with definition_error(
        "workflow 'expense', handle: takes (self, error) but must take 4 parameters "
        "(self, error, state, ctx); write it as `def handle(self, error, state, ctx)`"
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step
            async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()

            def handle(self, error: Exception) -> gd.Outcome:
                return gd.stop(str(error))


def test_job_without_args_and_ctx_shows_the_shape() -> None:
    with definition_error(
        "job 'send_mail': takes (args) but must take 2 parameters (args, ctx); "
        "write it as `async def perform(args, ctx)`"
    ):

        @gd.job(name="send_mail")
        async def send_mail(args: Any) -> None:
            return None


def test_job_with_extra_parameter_shows_the_shape() -> None:
    with definition_error(
        "job 'send_mail': takes (self, args, ctx) but must take 2 parameters (args, ctx)"
    ):

        @gd.job(name="send_mail")
        async def send_mail(self: Any, args: Any, ctx: gd.Context) -> None:
            return None


# -- retry policy and durations ----------------------------------------------------------


@pytest.mark.parametrize(("max_attempts", "shown"), [(0, "0"), (-1, "-1"), ("3", "'3'")])
def test_workflow_max_attempts_below_one_fails(max_attempts: Any, shown: str) -> None:
    with definition_error(f"workflow 'expense': max_attempts must be at least 1, got {shown}"):

        @gd.workflow(name="expense", max_attempts=max_attempts)
        class Expense:
            @gd.step
            async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


def test_step_max_attempts_below_one_fails() -> None:
    with definition_error("workflow 'expense', step 'pay': max_attempts must be at least 1, got 0"):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step(max_attempts=0)
            async def pay(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


def test_job_max_attempts_below_one_fails() -> None:
    with definition_error("job 'send_mail': max_attempts must be at least 1, got 0"):

        @gd.job(name="send_mail", max_attempts=0)
        async def send_mail(args: Any, ctx: gd.Context) -> None:
            return None


@pytest.mark.parametrize(
    ("lease", "shown"),
    [
        (timedelta(seconds=-5), "datetime.timedelta(days=-1, seconds=86395)"),
        (timedelta(0), "datetime.timedelta(0)"),
        (30, "30"),
    ],
)
def test_workflow_non_positive_lease_fails(lease: Any, shown: str) -> None:
    with definition_error(f"workflow 'expense': lease must be a positive timedelta, got {shown}"):

        @gd.workflow(name="expense", lease=lease)
        class Expense:
            @gd.step
            async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


def test_job_negative_lease_fails() -> None:
    with definition_error("job 'send_mail': lease must be a positive timedelta"):

        @gd.job(name="send_mail", lease=timedelta(seconds=-1))
        async def send_mail(args: Any, ctx: gd.Context) -> None:
            return None


@pytest.mark.parametrize(
    ("timeout", "shown"),
    [
        (timedelta(0), "datetime.timedelta(0)"),
        (timedelta(seconds=-1), "datetime.timedelta(days=-1, seconds=86399)"),
        (30, "30"),
    ],
)
def test_step_non_positive_timeout_fails(timeout: Any, shown: str) -> None:
    with definition_error(
        f"workflow 'expense', step 'pay': timeout must be a positive timedelta, got {shown}"
    ):

        @gd.workflow(name="expense")
        class Expense:
            @gd.step(timeout=timeout)
            async def pay(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


def test_job_non_positive_timeout_fails() -> None:
    with definition_error("job 'send_mail': timeout must be a positive timedelta"):

        @gd.job(name="send_mail", timeout=timedelta(0))
        async def send_mail(args: Any, ctx: gd.Context) -> None:
            return None


@pytest.mark.parametrize("queue", ["", None])
def test_workflow_empty_queue_fails(queue: Any) -> None:
    with definition_error(f"workflow 'expense': queue must be a non-empty string, got {queue!r}"):

        @gd.workflow(name="expense", queue=queue)
        class Expense:
            @gd.step
            async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()
