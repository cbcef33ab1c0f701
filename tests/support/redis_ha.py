"""Real Redis high-availability topologies on free loopback ports, for tests.

- `SentinelSet`: a primary, one replica and three `redis-sentinel`s (Debian's package)
  monitoring them, with a short down-after (the failover takes a few seconds, not 30).
  The replica authenticates to the primary as the ACL user `repl`, so a test can cut
  replication for real (`cut_replication`) and make the primary acknowledge writes its
  replica never gets: the asynchronous-replication loss a failover exposes.
- `Cluster`: three `redis-server --cluster-enabled yes` masters joined by
  `redis-cli --cluster create`.

Every process is ours (Popen), stopped by its handle on exit.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import redis

from taskapi.server.app import App
from taskapi.server.config import Settings
from tests.integration.api import Api

MASTER_NAME = "taskapi-test"
DOWN_AFTER_MS = 600  # how long the sentinels wait before calling the primary down
REPL_PASSWORD = "repl-test-password"


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until true; fail naming `what` after `timeout` seconds (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def free_port_pair() -> int:
    """A free port whose +10000 (the Cluster bus port) is free too."""
    for _ in range(200):
        port = random.randint(20000, 30000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair found")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Node:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, **kwargs)  # type: ignore[arg-type]

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no goodbye to the replica, as a crashed machine."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _start(binary: str, config: str, directory: Path, port: int) -> Node:
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "redis.conf"
    config_file.write_text(config)
    with open(directory / "log.txt", "ab") as log:
        process = subprocess.Popen(
            [binary, str(config_file)], cwd=directory, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    node = Node(port, directory, process)
    wait_for(lambda: bool(node.client().ping()), 10, f"{binary} on port {port}")
    return node


def _server_config(port: int, directory: Path, extra: str = "") -> str:
    return (
        f'port {port}\nbind 127.0.0.1\ndir {directory}\nsave ""\nappendonly no\nloglevel warning\n'
        f"protected-mode no\n{extra}"
    )


@dataclass
class SentinelSet:
    primary: Node
    replica: Node
    sentinels: list[Node] = field(default_factory=list)

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS for this set."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def master_port(self) -> int | None:
        """The primary's port as the sentinels see it now (None while none answers)."""
        for sentinel in self.sentinels:
            try:
                address: Any = sentinel.client().sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            if address:
                return int(address[1])
        return None

    def cut_replication(self) -> None:
        """Stop the primary's writes reaching the replica: its replication user is switched off
        and its link dropped (it keeps trying and failing to authenticate)."""
        primary = self.primary.client()
        primary.acl_setuser("repl", enabled=False)
        primary.client_kill_filter(user="repl")
        wait_for(
            lambda: self.replica.client().info("replication")["master_link_status"] == "down",
            10,
            "the replica's link to go down",
        )

    def wait_failed_over(self, timeout: float = 30) -> None:
        """Until the sentinels name the replica, and it has taken the role."""
        wait_for(lambda: self.master_port() == self.replica.port, timeout, "the sentinels to promote the replica")
        wait_for(lambda: self.replica.client().info("replication")["role"] == "master", timeout, "the promotion")


@contextmanager
def sentinel_set(directory: Path) -> Iterator[SentinelSet]:
    server = shutil.which("redis-server")
    sentinel_binary = shutil.which("redis-sentinel")
    if server is None or sentinel_binary is None:
        raise RuntimeError("redis-server and redis-sentinel are needed: run scripts/setup.sh")
    started: list[Node] = []
    try:
        primary_port = free_port_pair()
        replication_user = f"user repl on >{REPL_PASSWORD} +psync +replconf +ping\n"
        primary = _start(
            server,
            _server_config(primary_port, directory / "primary", replication_user),
            directory / "primary",
            primary_port,
        )
        started.append(primary)
        replica_port = free_port_pair()
        replica = _start(
            server,
            _server_config(
                replica_port,
                directory / "replica",
                f"replicaof 127.0.0.1 {primary_port}\nmasteruser repl\nmasterauth {REPL_PASSWORD}\nrepl-timeout 5\n",
            ),
            directory / "replica",
            replica_port,
        )
        started.append(replica)
        wait_for(lambda: replica.client().info("replication")["master_link_status"] == "up", 10, "the replica to sync")
        topology = SentinelSet(primary, replica)
        for i in range(3):
            port = free_port_pair()
            config = (
                f"port {port}\nbind 127.0.0.1\ndir {directory / f'sentinel{i}'}\nprotected-mode no\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} 5000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            node = _start(sentinel_binary, config, directory / f"sentinel{i}", port)
            started.append(node)
            topology.sentinels.append(node)

        def ready() -> bool:
            # Every sentinel knows the replica and both other sentinels (hello messages, ~2 s).
            counts: list[Any] = [
                (s.client().sentinel_slaves(MASTER_NAME), s.client().sentinel_sentinels(MASTER_NAME))
                for s in topology.sentinels
            ]
            return all(len(replicas) == 1 and len(others) == 2 for replicas, others in counts)

        wait_for(ready, 30, "the sentinels to discover the replica and each other")
        yield topology
    finally:
        for node in reversed(started):
            node.stop()


@dataclass
class Cluster:
    masters: list[Node]

    @property
    def addresses(self) -> str:
        """REDIS_CLUSTER for this cluster."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.masters)

    def node_of(self, key: str) -> Node:
        """The master that serves `key`'s slot."""
        client = self.masters[0].client()
        slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))  # type: ignore[no-untyped-call]
        slots: Any = client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        for start, end, primary, *_ in slots:
            if int(start) <= slot <= int(end):
                return next(n for n in self.masters if n.port == int(primary[1]))
        raise AssertionError(f"no node serves slot {slot}")


@contextmanager
def redis_cluster(directory: Path, size: int = 3) -> Iterator[Cluster]:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise RuntimeError("redis-server and redis-cli are needed: run scripts/setup.sh")
    masters: list[Node] = []
    try:
        for i in range(size):
            port = free_port_pair()
            extra = "cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 2000\n"
            masters.append(
                _start(server, _server_config(port, directory / f"node{i}", extra), directory / f"node{i}", port)
            )
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in masters), "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        wait_for(lambda: all(n.client().cluster("INFO")["cluster_state"] == "ok" for n in masters), 30, "the cluster")
        yield Cluster(masters)
    finally:
        for node in masters:
            node.stop()


@contextmanager
def serving(settings: Settings) -> Iterator[tuple[App, Api]]:
    """An App on `settings` with one replica, and the API over a channel to it."""
    app = App(settings)
    try:
        replica = app.start_replica(0)
        with grpc.insecure_channel(replica.address) as channel:
            yield app, Api(channel)
    finally:
        app.close(grace=0.5)
