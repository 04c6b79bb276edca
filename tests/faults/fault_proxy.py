"""A PostgreSQL wire-protocol proxy that injects real connection faults.

Engines under test connect through it (`proxy.dsn`); the server is the session's real one.
It reads the protocol just enough to know which statement each connection runs (Parse names
a statement, Bind executes it, Query runs a simple one), and on request:

- `cut(sql, after_commit=True)`: lets the statement run and its transaction commit on the
  server, then drops the server's answer and closes the client's connection: the client
  sees its connection lost although the work is durable (an acknowledgement lost).
- `cut(sql, after_commit=False)`: closes the connection when the client sends the
  statement, before the server sees it: the client cannot know that nothing happened.
- `pause(sql)`: holds the statement (the client has sent it, the server has not seen it)
  until `pause.released` is set; `pause.reached` tells that it arrived.
- `refusing = True`: new connections are closed at once (a server that cannot be reached);
  open connections go on working.
- `last_words()`: the next answer the server completes (its ReadyForQuery) is followed, in
  the same write, by the FATAL error a backend sends before it exits (shutdown, crash,
  termination), and the connection stays open: the client has read the error while idle
  but not yet the end of the connection, as happens for a moment when a server goes away.

Nothing here is a mock: every statement that reaches the server runs there for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

_SSL_REQUEST = 80877103
_GSS_REQUEST = 80877104


@dataclass
class Fault:
    """One armed fault: the statement text it fires on, how, and how many times left."""

    sql: str
    after_commit: bool
    times: int
    skip: int = 0
    fired: list[str] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Pause:
    """One armed pause: the statement it holds, how many times left, and its two events."""

    sql: str
    times: int
    skip: int = 0
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)


class _Conn:
    """The state of one proxied connection."""

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.statements: dict[bytes, str] = {}
        self.armed: Fault | None = None
        self.holding = False  # the answer under way may be the commit's: keep it back
        self.held: list[bytes] = []
        self.failed = False

    def close(self) -> None:
        for writer in (self.client, self.server):
            with contextlib.suppress(Exception):
                writer.close()


class FaultProxy:
    """Listens on a unix socket and forwards to the server of `dsn` (a unix-socket DSN)."""

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        self.target_dir = query["host"][0] if "host" in query else (parts.hostname or "")
        if not self.target_dir.startswith("/"):
            raise ValueError(f"the fault proxy needs a unix-socket DSN, got {dsn!r}")
        self.port = int(query["port"][0]) if "port" in query else (parts.port or 5432)
        self.folder = tempfile.mkdtemp(prefix="gdfp")  # short: unix socket paths are limited
        rest = {k: v[0] for k, v in query.items() if k not in ("host", "port")}
        rest.update(host=self.folder, port=str(self.port))
        self.dsn = urlunsplit(parts._replace(query=urlencode(rest)))
        self.refusing = False
        self.faults: list[Fault] = []
        self.pauses: list[Pause] = []
        self.accepted = 0
        self.words: asyncio.Event | None = None
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def _socket(self) -> str:
        return os.path.join(self.folder, f".s.PGSQL.{self.port}")

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_unix_server(self._accept, path=self._socket)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for conn in list(self._conns):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    def drop_all(self) -> None:
        """Close every open connection, as a server that stops does (with `refusing`, the
        server looks down until `refusing` is False again)."""
        for conn in list(self._conns):
            conn.close()

    def last_words(self) -> asyncio.Event:
        """Arm `last_words` (see the module docstring); the event is set once they are sent."""
        self.words = asyncio.Event()
        return self.words

    def cut(self, sql: str, *, after_commit: bool = True, times: int = 1, skip: int = 0) -> Fault:
        """Arm a fault on the statement whose text is `sql`, letting the first `skip`
        executions through; `fault.event` is set when it fired."""
        fault = Fault(sql, after_commit, times, skip)
        self.faults.append(fault)
        return fault

    def pause(self, sql: str, *, times: int = 1, skip: int = 0) -> Pause:
        """Hold `times` executions of `sql`, after letting `skip` through, until
        `pause.released` is set."""
        held = Pause(sql, times, skip)
        self.pauses.append(held)
        return held

    # -- plumbing -------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        if self.refusing:
            cwriter.close()
            return
        self.accepted += 1
        try:
            sreader, swriter = await asyncio.open_unix_connection(
                os.path.join(self.target_dir, f".s.PGSQL.{self.port}")
            )
        except OSError:
            cwriter.close()
            return
        conn = _Conn(cwriter, swriter)
        self._conns.add(conn)
        try:
            # Untyped start-up messages: SSL/GSS requests get a one-byte answer, then the
            # startup packet (or a cancel request) follows.
            while True:
                head = await creader.readexactly(4)
                body = await creader.readexactly(int.from_bytes(head, "big") - 4)
                swriter.write(head + body)
                code = int.from_bytes(body[:4], "big")
                if code in (_SSL_REQUEST, _GSS_REQUEST):
                    cwriter.write(await sreader.readexactly(1))
                    continue
                break
            await asyncio.gather(self._upstream(conn, creader), self._downstream(conn, sreader))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            conn.close()
            self._conns.discard(conn)

    def _match(self, sql: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and sql == fault.sql:
                if fault.skip > 0:
                    fault.skip -= 1
                    return None
                return fault
        return None

    def _paused(self, sql: str) -> Pause | None:
        for held in self.pauses:
            if held.times > 0 and sql == held.sql:
                if held.skip > 0:
                    held.skip -= 1
                    return None
                held.times -= 1
                return held
        return None

    async def _upstream(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        """Client to server: note what each message runs, fire `before` faults."""
        while True:
            kind = await reader.readexactly(1)
            head = await reader.readexactly(4)
            body = await reader.readexactly(int.from_bytes(head, "big") - 4)
            sql: str | None = None
            if kind == b"P":
                name, rest = body.split(b"\0", 1)
                conn.statements[name] = rest.split(b"\0", 1)[0].decode()
            elif kind == b"B":
                _portal, rest = body.split(b"\0", 1)
                sql = conn.statements.get(rest.split(b"\0", 1)[0])
            elif kind == b"Q":
                sql = body.split(b"\0", 1)[0].decode()
            held = self._paused(sql) if sql is not None else None
            if held is not None:
                held.reached.set()
                await held.released.wait()
            fault = self._match(sql) if sql is not None else None
            if fault is not None and not fault.after_commit:
                self._fire(fault, sql or "")
                conn.close()
                return
            if fault is not None:
                conn.armed = fault
                conn.holding = True
            elif conn.armed is not None and kind == b"Q" and _is_commit(sql):
                conn.holding = True  # the end of the armed statement's transaction
            conn.server.write(kind + head + body)
            if kind == b"X":
                return

    async def _downstream(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        """Server to client: hold an armed statement's answer until its transaction ends."""
        while True:
            kind = await reader.readexactly(1)
            head = await reader.readexactly(4)
            body = await reader.readexactly(int.from_bytes(head, "big") - 4)
            message = kind + head + body
            fault = conn.armed
            if fault is None or not conn.holding:
                if kind == b"Z" and self.words is not None and not self.words.is_set():
                    message += _FATAL
                    self.words.set()
                conn.client.write(message)
                continue
            conn.held.append(message)
            conn.failed |= kind == b"E"
            if kind != b"Z":
                continue
            status = body[:1]
            if status == b"I" and not conn.failed and fault.times > 0:
                # Committed on the server (idle, no error): the client never hears of it.
                self._fire(fault, fault.sql)
                conn.close()
                return
            conn.client.write(b"".join(conn.held))
            conn.held.clear()
            conn.holding = False  # inside the transaction: wait for its COMMIT
            if status == b"I":  # rolled back or failed: disarm, the fault waits for another
                conn.armed = None
                conn.failed = False

    def _fire(self, fault: Fault, sql: str) -> None:
        fault.times -= 1
        fault.fired.append(sql)
        fault.event.set()


def _error_response(*fields: bytes) -> bytes:
    body = b"".join(f + b"\0" for f in fields) + b"\0"
    return b"E" + (len(body) + 4).to_bytes(4, "big") + body


_FATAL = _error_response(
    b"SFATAL", b"VFATAL", b"C57P01", b"Mterminating connection due to administrator command"
)


def _is_commit(sql: str | None) -> bool:
    return sql is not None and sql.strip().upper().startswith(("COMMIT", "END"))
