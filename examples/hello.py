"""Hello, gendurable: a three-step workflow run to completion.

    python examples/hello.py                 # a throwaway embedded PostgreSQL
    GENDURABLE_DSN=postgresql://user@host/db python examples/hello.py

With `GENDURABLE_DSN` unset, `gd.Engine()` starts the embedded server by itself (the
`gendurable[embedded]` extra) and stops it when the engine stops. `--schema` picks the
PostgreSQL schema the rows go to (default `gendurable`).
"""

from __future__ import annotations

import argparse
import asyncio

import msgspec

import gendurable as gd


@gd.workflow(name="hello")
class Hello:
    """greet -> punctuate -> finish: each step commits the state it leaves behind."""

    class State(msgspec.Struct):
        name: str
        greeting: str = ""

    class Result(msgspec.Struct):
        message: str

    @gd.step(start=True)
    async def greet(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.greeting = f"Hello, {state.name}"
        return gd.goto(self.punctuate)

    @gd.step
    def punctuate(self, state: State, ctx: gd.Context) -> gd.Outcome:
        # A plain `def` step runs in a worker thread, so blocking calls are fine here.
        state.greeting += "!"
        return gd.goto(self.finish)

    @gd.step
    async def finish(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done(Hello.Result(message=state.greeting))


async def main(dsn: str | None = None, schema: str = "gendurable") -> Hello.Result:
    """Start one instance, wait for it to finish and return its result."""
    async with gd.Engine(dsn, workflows=[Hello], schema=schema, queues={"default": 4}):
        handle = await Hello.start(state=Hello.State(name="world"))
        print(f"started hello instance {handle.id}")
        result: Hello.Result = await Hello.result(handle.id, timeout=30)
        info = await Hello.get(handle.id)
        print(f"instance {info.id} is {info.status} at step {info.step!r}")
        return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--schema", default="gendurable", help="PostgreSQL schema to use")
    args = parser.parse_args()
    print("The workflow's state diagram, in Mermaid (paste it into https://mermaid.live):")
    print(Hello.spec.to_mermaid())
    print(asyncio.run(main(schema=args.schema)).message)
