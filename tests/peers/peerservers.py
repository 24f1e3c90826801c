"""Real peers for the client tests: an HTTP(S) server, redis-server and
PostgreSQL, each a subprocess on 127.0.0.1 with a free port, started and
stopped by the fixtures (tests/peers/conftest.py, and
tests/flask/test_shared_clients.py, which imports this module).

None of them uses flaskasync.  A missing binary skips the tests that need
it, with the reason, unless FLASKASYNC_REQUIRE_PEERS=1 (set by .ci/run),
which makes it an error: CI never skips them.
"""

from __future__ import annotations

import glob
import importlib
import json
import os
import pathlib
import pwd
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
REQUIRE = os.environ.get("FLASKASYNC_REQUIRE_PEERS") == "1"
INSTALL_HINT = "scripts/bootstrap.sh (make test) and .ci/run install it with apt-get"


def unavailable(what: str) -> None:
    """Skip (or, under FLASKASYNC_REQUIRE_PEERS=1, fail) for a missing peer."""
    message = f"{what}: {INSTALL_HINT}"
    if REQUIRE:
        pytest.fail(f"FLASKASYNC_REQUIRE_PEERS=1 and {message}", pytrace=False)
    pytest.skip(message)


def import_or_skip(name: str):
    """Import a test extra (pyproject's [test]); skip without it, unless
    FLASKASYNC_REQUIRE_PEERS=1, where the ImportError is the failure."""
    if REQUIRE:
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"{name} is not installed (pip install -e '.[test]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_us() -> list[str]:
    """A command prefix that makes the server get SIGTERM if this process dies
    without stopping it (the watchdog's exit, a kill): util-linux's setpriv
    sets the parent-death signal, then execs the server."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def _stop(proc: subprocess.Popen, sig: int, timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: pathlib.Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# ---------------------------------------------------------------- HTTP(S)


class HttpPeer:
    """tests/peers/peer_httpd.py in a subprocess, plain and TLS, with a
    certificate from a trustme CA made for this session.

    url       http://127.0.0.1:PORT
    tls_url   https://127.0.0.1:PORT      (certificate for 127.0.0.1 and localhost)
    tls_name_url  https://localhost:PORT  (same server, by name: SNI, name check)
    ca_path   the CA certificate (PEM) that clients must trust
    """

    def __init__(self, workdir: pathlib.Path):
        import trustme

        workdir.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_path = workdir / "ca.pem"
        self.cert_path = workdir / "server.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        cert.private_key_and_cert_chain_pem.write_to_path(str(self.cert_path))
        self.log_path = workdir / "httpd.stderr"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*_die_with_us(), sys.executable, str(HERE / "peer_httpd.py"),
                 "--certfile", str(self.cert_path)],
                stdout=subprocess.PIPE, stderr=log, start_new_session=True,
            )
        ready, _, _ = select.select([self.proc.stdout], [], [], 20.0)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"the HTTP peer did not start:\n{_tail(self.log_path)}")
        ports = json.loads(line)
        self.port, self.tls_port = ports["plain"], ports["tls"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.tls_url = f"https://127.0.0.1:{self.tls_port}"
        self.tls_name_url = f"https://localhost:{self.tls_port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the session's CA (and only it)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def log(self) -> str:
        return _tail(self.log_path, 100_000)

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM)
        if self.proc.stdout:
            self.proc.stdout.close()


# ---------------------------------------------------------------- redis


def redis_binary() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(p, os.X_OK)), None)


class RedisPeer:
    """redis-server on 127.0.0.1:PORT and on a Unix socket, no persistence.

    url        redis://127.0.0.1:PORT/0
    unix_path  the Unix socket's path
    """

    def __init__(self, workdir: pathlib.Path, binary: str):
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "redis.log"
        self.unix_path = str(workdir / "redis.sock")
        for _attempt in range(3):  # the free port may be taken in between
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [*_die_with_us(), binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no",
                     "--maxclients", "1000", "--unixsocket", self.unix_path, "--unixsocketperm", "700"],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            if self._wait_ready():
                break
        else:
            raise RuntimeError(f"redis-server did not start:\n{_tail(self.log_path)}")
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _wait_ready(self, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM)


# ---------------------------------------------------------------- PostgreSQL


def postgres_bindir() -> str | None:
    """The directory holding initdb and postgres: $FLASKASYNC_PG_BINDIR, the
    newest /usr/lib/postgresql/*/bin (Debian), or initdb's directory on PATH."""
    candidates = [os.environ.get("FLASKASYNC_PG_BINDIR", "")]
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    versions.sort(key=lambda p: [int(x) for x in re.findall(r"\d+", p)], reverse=True)
    candidates += versions
    if shutil.which("initdb"):
        candidates.append(os.path.dirname(shutil.which("initdb")))
    for d in candidates:
        if d and all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "postgres", "pg_isready")):
            return d
    return None


class PostgresPeer:
    """A throw-away PostgreSQL cluster: initdb into a temporary directory,
    postgres on 127.0.0.1:PORT with its Unix socket in that directory, trust
    authentication, durability off (fsync, synchronous_commit).

    initdb and postgres refuse to run as root: as root they run as the
    'postgres' user (made by Debian's package) or else 'nobody'.

    dsn         postgresql://postgres@127.0.0.1:PORT/postgres
    socket_dir  the directory of its Unix socket (.s.PGSQL.PORT)
    """

    def __init__(self, bindir: str):
        self.bindir = bindir
        self.base = pathlib.Path(tempfile.mkdtemp(prefix="flaskasync-pg-"))
        self.socket_dir = str(self.base)
        self.data = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self.proc = None
        as_user: dict = {}
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                user = pwd.getpwnam("nobody")
            os.chown(self.base, user.pw_uid, user.pw_gid)
            as_user = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
            self.user = user.pw_name
        else:
            self.user = pwd.getpwuid(os.geteuid()).pw_name
        env = dict(os.environ, LC_ALL="C", LANG="C", HOME=str(self.base))
        run = dict(cwd=self.base, env=env, **as_user)
        init = subprocess.run(
            [f"{bindir}/initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--no-locale", "--no-sync"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **run,
        )
        if init.returncode:
            self.cleanup()
            raise RuntimeError(f"initdb failed ({init.returncode}) as {self.user}:\n"
                               f"{init.stdout.decode(errors='replace')[-3000:]}")
        for _attempt in range(3):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [*_die_with_us(), f"{bindir}/postgres", "-D", str(self.data), "-p", str(self.port),
                     "-k", str(self.base), "-c", "listen_addresses=127.0.0.1",
                     "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                     "-c", "max_connections=200"],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **run,
                )
            if self._wait_ready():
                break
        else:
            log = _tail(self.log_path)
            self.stop()
            raise RuntimeError(f"postgres did not start as {self.user}:\n{log}")
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _wait_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            ready = subprocess.run(
                [f"{self.bindir}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", "postgres", "-d", "postgres", "-t", "2"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            if ready.returncode == 0:
                return True
            time.sleep(0.1)
        _stop(self.proc, signal.SIGKILL)
        return False

    def log(self) -> str:
        return _tail(self.log_path, 100_000)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGINT)  # fast shutdown
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


# ---------------------------------------------------------------- starters


def start_http(workdir: pathlib.Path) -> HttpPeer:
    import_or_skip("trustme")
    return HttpPeer(workdir)


def start_redis(workdir: pathlib.Path) -> RedisPeer:
    binary = redis_binary()
    if binary is None:
        unavailable("redis-server not found (Debian package redis-server)")
    return RedisPeer(workdir, binary)


def start_postgres() -> PostgresPeer:
    bindir = postgres_bindir()
    if bindir is None:
        unavailable("PostgreSQL's initdb/postgres not found under /usr/lib/postgresql/*/bin "
                    "(Debian package postgresql)")
    return PostgresPeer(bindir)
