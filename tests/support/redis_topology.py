"""Real Redis deployments for the tests: a 3-master Cluster, a primary + replica + 3 Sentinels.

Each is a context manager that starts its ``redis-server`` / ``redis-sentinel`` processes on free
loopback ports with their data in a temporary directory, waits (bounded) until the deployment
is ready, and stops every process it started by its pid when the block ends, however it ends.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from adapters.memory.embedded_redis import find_redis_server
from tests.support.waiting import wait_for

SERVICE = "mymaster"
#: How long the Sentinels wait before they call an unreachable primary down, and what they allow
#: a failover: short, so the failover test takes seconds (Sentinel's defaults are 30 s, 180 s).
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def free_ports(count: int, *, bus: bool = False) -> list[int]:
    """Free loopback ports; with ``bus``, ports whose +10000 (a cluster node's bus) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port in ports or (bus and (port + 10000 > 65535 or not _free(port + 10000))):
            continue
        ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def info(port: int, section: str) -> dict[str, str]:
    """``INFO section`` (or ``CLUSTER INFO``) of the server on ``port`` as a dict; {} if it does
    not answer."""
    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        found = client.cluster("INFO") if section == "cluster" else client.info(section)
        return {str(k): str(v) for k, v in found.items()}
    except redis.RedisError:
        return {}
    finally:
        client.close()


@dataclass
class Processes:
    """The processes a deployment started, by name; ``stop`` ends them all by pid."""

    root: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        log.close()  # the child has its own descriptor
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> float:
        """SIGKILL ``name`` (a crash: no shutdown, no last write) and reap it; when it was sent."""
        proc = self.procs[name]
        at = time.monotonic()
        proc.kill()
        proc.wait(timeout=10)
        return at

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # a test's data: no need to wait for a clean end
                proc.kill()
                proc.wait(timeout=10)

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.root / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return f"{name}.log: " + "\n".join(text.splitlines()[-lines:])


def _server_args(binary: str, port: int, data: Path, *extra: str) -> list[str]:
    data.mkdir(parents=True, exist_ok=True)
    return [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
        "--appendonly", "yes", "--save", "", "--daemonize", "no", "--protected-mode", "no",
        *extra,
    ]  # fmt: skip


@dataclass
class Cluster:
    ports: list[int]
    processes: Processes

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:2])


@contextlib.contextmanager
def redis_cluster(root: Path, masters: int = 3) -> Iterator[Cluster]:
    """A Redis Cluster of ``masters`` primaries (no replicas), every slot assigned."""
    binary = find_redis_server()
    cli = shutil.which("redis-cli") or str(Path(binary).with_name("redis-cli"))
    ports = free_ports(masters, bus=True)
    processes = Processes(root)
    try:
        for port in ports:
            processes.start(f"node-{port}", _server_args(
                binary, port, root / str(port), "--cluster-enabled", "yes",
                "--cluster-config-file", str(root / str(port) / "nodes.conf"),
                "--cluster-node-timeout", "2000",
            ))  # fmt: skip
        for port in ports:
            wait_for(lambda port=port: info(port, "server"), what=f"node {port} up",
                     timeout_s=15)  # fmt: skip
        created = subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{port}" for port in ports],
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert created.returncode == 0, created.stdout + created.stderr
        for port in ports:
            wait_for(lambda port=port: info(port, "cluster").get("cluster_state") == "ok",
                     what=f"cluster_state:ok on {port}", timeout_s=30)  # fmt: skip
        yield Cluster(ports, processes)
    finally:
        processes.stop()


@dataclass
class Sentinels:
    primary: int
    replica: int
    sentinels: list[int]
    processes: Processes

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def master_port(self) -> int | None:
        """The primary's port as a Sentinel that answers sees it."""
        for port in self.sentinels:
            client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
            try:
                address = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", SERVICE)
                if address:
                    return int(address[1])
            except redis.RedisError:
                continue
            finally:
                client.close()
        return None

    def ready(self) -> bool:
        """Every Sentinel sees the primary up, its replica and the two other Sentinels."""
        for port in self.sentinels:
            client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
            try:
                state = client.sentinel_master(SERVICE)
            except redis.RedisError:
                return False
            finally:
                client.close()
            others, replicas = state.get("num-other-sentinels"), state.get("num-slaves")
            if others != len(self.sentinels) - 1 or replicas != 1 or state.get("is_sdown"):
                return False
        if info(self.replica, "replication").get("master_link_status") != "up":
            return False
        # after its first sync the replica rewrites its append-only file; until that is done it
        # refuses to shut down
        persistence = info(self.replica, "persistence")
        if (persistence.get("aof_rewrite_in_progress"),
                persistence.get("aof_rewrite_scheduled")) != ("0", "0"):  # fmt: skip
            return False
        # and a write reaches it at once (after a diskless sync the primary streams writes only
        # once the replica's first ACK came, up to a second later)
        client = redis.Redis(port=self.primary, socket_timeout=1)
        try:
            client.set("probe:replication", "1")
            return client.execute_command("WAIT", 1, 20) == 1
        except redis.RedisError:
            return False
        finally:
            client.close()


def _sentinel_conf(path: Path, port: int, primary: int, replica: int, ids: dict[int, str]) -> None:
    """A Sentinel's config. It is told its id, the replica and the other Sentinels up front (the
    lines Sentinel writes there itself), instead of finding them through the primary's hello
    messages, which took from 2 to 10 s."""
    others = "".join(f"sentinel known-sentinel {SERVICE} 127.0.0.1 {other} {ids[other]}\n"
                     for other in ids if other != port)  # fmt: skip
    path.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {path.parent}\nprotected-mode no\n"
        f"sentinel myid {ids[port]}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {SERVICE} 1\n"
        f"sentinel known-replica {SERVICE} 127.0.0.1 {replica}\n{others}"
    )


def find_sentinel() -> list[str]:
    """How to start a Sentinel: ``redis-sentinel`` (Debian's package), else ``redis-server
    --sentinel``."""
    found = shutil.which("redis-sentinel")
    return [found] if found else [find_redis_server(), "--sentinel"]


@contextlib.contextmanager
def redis_sentinels(root: Path) -> Iterator[Sentinels]:
    """A primary and its replica (append-only files on) watched by 3 Sentinels, quorum 2."""
    binary, sentinel = find_redis_server(), find_sentinel()
    primary, replica, *watchers = free_ports(5)
    processes = Processes(root)
    deployment = Sentinels(primary, replica, watchers, processes)
    # no delay before the first full sync (Redis waits 5 s by default for more replicas)
    sync = ["--repl-diskless-sync-delay", "0"]
    try:
        processes.start("primary", _server_args(binary, primary, root / "primary", *sync))
        wait_for(lambda: info(primary, "server"), what="the primary up", timeout_s=15)
        processes.start("replica", _server_args(
            binary, replica, root / "replica", *sync, "--replicaof", "127.0.0.1", str(primary),
        ))  # fmt: skip
        ids = {port: secrets.token_hex(20) for port in watchers}
        for port in watchers:
            conf = root / f"sentinel-{port}" / "sentinel.conf"
            conf.parent.mkdir()
            _sentinel_conf(conf, port, primary, replica, ids)
            processes.start(f"sentinel-{port}", [*sentinel, str(conf)])
        wait_for(deployment.ready, timeout_s=30, what=lambda: "the Sentinels to see the primary, "
                 "its replica and each other\n" + processes.log_tail(f"sentinel-{watchers[0]}"))
        yield deployment
    finally:
        processes.stop()


__all__ = ["Cluster", "Processes", "Sentinels", "free_ports", "info", "redis_cluster",
           "redis_sentinels"]  # fmt: skip
