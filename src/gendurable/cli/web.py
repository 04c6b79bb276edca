"""`gendurable web`: serve the web dashboard (the `web` extra).

The dashboard's own modules (Starlette, Jinja2, uvicorn) are imported only when the
command runs, so the rest of the command line works without the extra.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..db.connect import describe_dsn
from ..errors import ConfigError
from ..web import EXTRA_HINT, app
from .command import EXIT_OK, command, database_options, require_dsn
from .output import UserError

DEFAULT_PORT = 8080


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return int(text)


def _web_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port to listen on (default: {DEFAULT_PORT}; 0: any free port, printed)",
    )
    parser.add_argument(
        "--app",
        metavar="MODULE:ENGINE",
        help="the engine whose workflows to show (diagrams, workflow pages, typed signals)",
    )
    parser.add_argument(
        "--allow-actions",
        action="store_true",
        help="allow signal, cancel, retry and rewind from the pages (default: read-only)",
    )
    parser.add_argument(
        "--refresh",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between live updates of the overview (default: 5)",
    )


@command("web", database_options, _web_options)
def web_command(args: argparse.Namespace) -> int:
    """Serve the web dashboard: overview, instances, workflows (needs gendurable[web]).

    Read-only unless --allow-actions. Prints the address once it listens; Ctrl-C stops it.
    """
    dsn = require_dsn(args)
    try:
        from ..web.server import listen, serve
    except ImportError as exc:
        raise UserError(f"{EXTRA_HINT} ({exc})") from None
    if args.app and "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules of the working directory import
    dashboard = app(
        dsn,
        args.schema,
        engine=args.app,
        allow_actions=args.allow_actions,
        refresh=args.refresh,
    )

    async def run() -> None:
        try:
            await dashboard.store()  # an unreachable server is reported now, in one line
        except ConfigError as exc:  # a schema never migrated: the user's to fix, not usage
            raise UserError(str(exc)) from None
        try:
            sock = listen(args.host, args.port)
        except OSError as exc:
            raise UserError(
                f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
            ) from None
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        mode = "actions allowed" if args.allow_actions else "read-only"

        def ready() -> None:
            print(
                f"gendurable web: schema {args.schema!r} of {describe_dsn(dsn)} "
                f"at http://{shown}:{port}/ ({mode})",
                flush=True,
            )

        try:
            await serve(dashboard, sock, ready=ready)
        finally:
            await dashboard.close()

    asyncio.run(run())
    return EXIT_OK
