"""A workflow defined in another module: `gendurable docs flows` must not document it."""

from typing import Any

import gendurable as gd


@gd.workflow(name="elsewhere")
class Elsewhere:
    @gd.step
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()
