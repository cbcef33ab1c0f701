"""The rate limiter's decision in Redis (taskapi.interceptors.ratelimit has the policy and
the per-process fallback): ratelimit.lua by EVALSHA, with the call's planned reads.

On one server, or a Sentinel-managed primary, a call's budgets, its sign-in gate and its
planned reads go to one script. On Redis Cluster a script may only touch one hash slot, so
they are grouped by slot (the keys' hash tags keep them to at most two groups: the user's or
the email's, and the IP's) and the groups' scripts go in one pipeline, answered by their
nodes in parallel. Each group decides and spends its own budgets; when one refuses (or
fails), the groups that allowed are refunded, so a refused call spends nothing anywhere.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from taskapi.server.domain.limits import LoginThrottle, RateLimit

log = logging.getLogger(__name__)
# What an unreachable Redis raises; RedisClusterException (no slots known, every node down) is
# not a RedisError.
REDIS_DOWN = (RedisError, RedisClusterException)


# Undoes one Login's up-front failure charge (see ratelimit.lua). KEYS: the (email, IP)
# record, the email's failure TAT. ARGV[1]: 1 when the password was right (the address's
# failures are forgotten), else 0 (only this attempt is undone); ARGV[2]: what the decision
# charged the email, in ms (less than an interval when the charge hit the cap).
_LOGIN_REFUND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == '1' or redis.call('HINCRBY', KEYS[1], 'f', -1) <= 0 then
  redis.call('DEL', KEYS[1])
end
local tat = tonumber(redis.call('GET', KEYS[2]))
if tat then
  local refunded = tat - tonumber(ARGV[2])
  if refunded <= now then
    redis.call('DEL', KEYS[2])
  else
    redis.call('SET', KEYS[2], string.format('%.17g', refunded), 'PX', math.ceil(refunded - now))
  end
end
return 1
"""

# Undoes what an allowed group charged when another group refused the call (Cluster only).
# KEYS: budgets; ARGV[i]: the interval each was charged, in ms.
_BUDGET_REFUND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat then
    local refunded = tat - tonumber(ARGV[i])
    if refunded <= now then
      redis.call('DEL', KEYS[i])
    else
      redis.call('SET', KEYS[i], string.format('%.17g', refunded), 'PX', math.ceil(refunded - now))
    end
  end
end
return 1
"""


@dataclass(frozen=True)
class Budget:
    """One subject's budget that applies to this call."""

    key: str  # Redis / local key without the prefix; starts with the subject's hash tag
    subject: str  # shown to the client in QuotaFailure
    limit: RateLimit
    description: str


@dataclass(frozen=True)
class LoginGate:
    """The failed sign-in records one Login call is checked against and charged to."""

    pair_key: str  # failures of this email from this client IP
    email_key: str  # failures of this email from anywhere
    budget: Budget  # what a refusal names: the hashed email and the policy


@dataclass(frozen=True)
class Outcome:
    """The state of one budget after the decision; times in whole seconds, rounded up."""

    budget: Budget
    remaining: int
    reset_seconds: int
    retry_after_seconds: int  # 0 when this budget allowed the call


@dataclass(frozen=True)
class Decision:
    """What the limiter decided for one call."""

    allowed: bool
    outcomes: list[Outcome]
    backend: str  # "redis" or "local"
    charged_ms: float = 0.0  # the Login failure charged to the email up front, refunded unless it failed
    replies: list[Any] | None = None  # to the planned reads; None when they did not run
    epochs: list[str] | None = None  # the cache epoch each reply was read under


@dataclass
class _Group:
    """The budgets, gate and reads of one call whose keys share a hash slot (one script run)."""

    budgets: list[int] = field(default_factory=list)  # indices into the call's budgets
    gate: bool = False
    reads: list[int] = field(default_factory=list)  # indices into the planned commands


class RedisDecider:
    def __init__(self, client: redis.Redis | RedisCluster, *, prefix: str, login: LoginThrottle) -> None:
        self._client = client
        self._prefix = prefix
        self._login = login
        self._login_refund = client.register_script(_LOGIN_REFUND)
        self._budget_refund = client.register_script(_BUDGET_REFUND)
        self._by_slot = isinstance(client, RedisCluster)
        # A plain client (one server or a Sentinel primary, untraced, pooled): its one EVALSHA
        # goes straight to a pooled connection, skipping the pipeline's and execute_command's
        # per-call machinery (~20-30 us of CPU a call, bench/README.md "Hot path"). A traced
        # client keeps execute_command, which makes the span.
        self._direct_pool: Any = None
        self._get_connection: Callable[[], Any] | None = None
        if type(client) is redis.Redis and client.connection is None:
            self._direct_pool = client.connection_pool
            self._get_connection = _undecorated(self._direct_pool.get_connection)
        script = resources.files("taskapi.interceptors").joinpath("ratelimit.lua").read_text(encoding="utf-8")
        self._script = script
        # EVALSHA needs only the digest; the script is sent (SCRIPT LOAD) once, and again
        # only after Redis answers NOSCRIPT (a restart or SCRIPT FLUSH empties its cache).
        self._sha = hashlib.sha1(script.encode()).hexdigest()

    def refund_login(self, gate: LoginGate, charged_ms: float, *, success: bool) -> None:
        """Undo a Login's up-front failure charge; on success also forget the address's failures."""
        keys = [self._prefix + gate.pair_key, self._prefix + gate.email_key]
        self._login_refund(keys=keys, args=[1 if success else 0, charged_ms])

    def decide(self, budgets: list[Budget], gate: LoginGate | None, commands: Sequence[tuple[str, ...]]) -> Decision:
        """The decision, made in Redis: one script on one server, one per hash slot on Cluster."""
        groups = self._groups(budgets, gate, commands)
        replies = self._run_groups(groups, budgets, gate, commands)
        outcomes: list[Outcome | None] = [None] * len(budgets)
        gate_outcome: Outcome | None = None
        read_replies: list[Any] = [None] * len(commands)
        epochs: list[str] = [""] * len(commands)
        charged, allowed = 0.0, all(reply[0] == 1 for reply in replies)
        for group, reply in zip(groups, replies, strict=True):
            # Positive milliseconds round up to >= 1 s, so a rejection never says "retry in 0 s".
            for j, i in enumerate(group.budgets):
                remaining, reset, retry = (int(x) for x in reply[1 + 3 * j : 4 + 3 * j])
                outcomes[i] = Outcome(budgets[i], remaining, ceil_s(reset), ceil_s(retry))
            at = 1 + 3 * len(group.budgets)
            if group.gate and gate is not None:
                wait, charged = int(reply[at]), float(reply[at + 1])
                at += 2
                if wait > 0:
                    gate_outcome = Outcome(gate.budget, 0, ceil_s(wait), ceil_s(wait))
            if allowed and group.reads:
                epoch = reply[at].decode() if isinstance(reply[at], bytes) else str(reply[at])
                for j, i in enumerate(group.reads):
                    read_replies[i], epochs[i] = reply[at + 1 + j], epoch
        if not allowed:
            self._refund_groups(groups, replies, budgets, gate)
        decided = [o for o in outcomes if o is not None] + ([gate_outcome] if gate_outcome is not None else [])
        if not commands or not allowed:
            return Decision(allowed, decided, "redis", charged)
        return Decision(allowed, decided, "redis", charged, read_replies, epochs)

    def _groups(
        self, budgets: list[Budget], gate: LoginGate | None, commands: Sequence[tuple[str, ...]]
    ) -> list[_Group]:
        """One group (one script) on a single server; one per hash slot on Cluster."""
        if not self._by_slot:
            return [_Group(list(range(len(budgets))), gate is not None, list(range(len(commands))))]
        by_slot: dict[int, _Group] = {}
        for i, budget in enumerate(budgets):
            by_slot.setdefault(key_slot((self._prefix + budget.key).encode()), _Group()).budgets.append(i)
        if gate is not None:
            by_slot.setdefault(key_slot((self._prefix + gate.pair_key).encode()), _Group()).gate = True
        for i, command in enumerate(commands):
            by_slot.setdefault(key_slot(command[1].encode()), _Group()).reads.append(i)
        return list(by_slot.values())

    def _script_args(
        self, group: _Group, budgets: list[Budget], gate: LoginGate | None, commands: Sequence[tuple[str, ...]]
    ) -> list[Any]:
        """EVALSHA's arguments for one group: numkeys, KEYS, ARGV (layout in ratelimit.lua)."""
        keys = [self._prefix + budgets[i].key for i in group.budgets]
        args: list[Any] = [len(group.budgets), 1 if group.gate else 0, len(group.reads)]
        for i in group.budgets:
            args += [budgets[i].limit.requests, budgets[i].limit.window_seconds * 1000]
        if group.gate and gate is not None:
            keys += [self._prefix + gate.pair_key, self._prefix + gate.email_key]
            login = self._login
            args += [login.email_failures.requests, login.window_ms, login.free_failures, login.backoff_seconds * 1000]
        for i in group.reads:
            command = commands[i]
            if command[0] not in ("GET", "HGET"):
                raise ValueError(f"a planned read must be GET or HGET, got {command[0]}")
            keys.append(command[1])
            args.append(command[2] if command[0] == "HGET" else "")
        return [len(keys), *keys, *args]

    def _run_groups(
        self, groups: list[_Group], budgets: list[Budget], gate: LoginGate | None, commands: Sequence[tuple[str, ...]]
    ) -> list[Any]:
        if not self._by_slot:  # one server: one group, one script, no pipeline
            return [self._run_one(self._script_args(groups[0], budgets, gate, commands))]
        arguments = [self._script_args(group, budgets, gate, commands) for group in groups]
        replies: list[Any] = [None] * len(groups)
        todo = list(range(len(groups)))
        for attempt in (1, 2):
            # transaction=False: a plain pipeline, one write and one read per node's socket.
            pipe = self._client.pipeline(transaction=False)
            for g in todo:
                # EVALSHA as a raw command: redis-py blocks its evalsha() in Cluster pipelines,
                # though the command itself routes by its first key like any other.
                pipe.execute_command("EVALSHA", self._sha, *arguments[g])
            results = pipe.execute(raise_on_error=False)
            for g, result in zip(todo, results, strict=True):
                replies[g] = result
            todo = [g for g in todo if isinstance(replies[g], NoScriptError)]
            if not todo or attempt == 2:
                break
            # NOSCRIPT (a restart, SCRIPT FLUSH, a promoted replica): load it and rerun only those
            # groups, so a group that ran already is not charged twice.
            self._client.script_load(self._script)
        failed = [reply for reply in replies if isinstance(reply, Exception)]
        if failed:
            ran = [reply if not isinstance(reply, Exception) else [0] for reply in replies]
            self._refund_groups(groups, ran, budgets, gate)
            raise failed[0]
        return replies

    def _run_one(self, arguments: list[Any]) -> Any:
        """The one group's script on a single server; NOSCRIPT loads it and runs it again
        (it did not run, so nothing was charged). A failure raises: there is nothing to refund."""
        try:
            return self._evalsha(arguments)
        except NoScriptError:
            self._client.script_load(self._script)
            return self._evalsha(arguments)

    def _evalsha(self, arguments: list[Any]) -> Any:
        pool = self._direct_pool
        if pool is None:
            return self._client.execute_command("EVALSHA", self._sha, *arguments)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        connection = self._get_connection()  # type: ignore[misc]  # set with the pool
        try:
            # The client's retry policy (one immediate retry, cache/client.py), on a fresh
            # connection after a connection error or timeout, as execute_command does.
            return connection.retry.call_with_retry(
                lambda: _send_read(connection, self._sha, arguments),
                lambda _error: connection.disconnect(),
            )
        finally:
            pool.release(connection)

    def _refund_groups(
        self, groups: list[_Group], replies: list[Any], budgets: list[Budget], gate: LoginGate | None
    ) -> None:
        """Give back what the groups that allowed charged, when another refused or failed."""
        for group, reply in zip(groups, replies, strict=True):
            if reply[0] != 1:
                continue
            try:
                if group.budgets and self._budget_refund is not None:
                    keys = [self._prefix + budgets[i].key for i in group.budgets]
                    limits = [budgets[i].limit for i in group.budgets]
                    intervals = [limit.window_seconds * 1000 / limit.requests for limit in limits]
                    self._budget_refund(keys=keys, args=intervals)
                if group.gate and gate is not None and self._login_refund is not None:
                    charged = float(reply[2 + 3 * len(group.budgets)])
                    keys = [self._prefix + gate.pair_key, self._prefix + gate.email_key]
                    self._login_refund(keys=keys, args=[0, charged])
            except REDIS_DOWN as exc:  # the charge stays: forgotten with the window
                log.warning("rate limit refund failed: %s", exc.__class__.__name__)


def _undecorated(get_connection: Callable[[], Any]) -> Callable[[], Any]:
    """The pool's `get_connection` without redis-py's `deprecated_args` wrapper, which inspects
    the arguments of every call (~4-6 % of a cached read's handler samples, py-spy) to warn
    about arguments this module never passes. The method itself, bound, when it is wrapped."""
    function = getattr(get_connection, "__func__", None)
    inner = getattr(function, "__wrapped__", None)
    owner = getattr(get_connection, "__self__", None)
    return inner.__get__(owner) if inner is not None and owner is not None else get_connection


def _send_read(connection: Any, sha: str, arguments: list[Any]) -> Any:
    connection.send_command("EVALSHA", sha, *arguments)
    return connection.read_response()


def ceil_s(ms: float) -> int:
    return max(0, math.ceil(ms / 1000.0))
