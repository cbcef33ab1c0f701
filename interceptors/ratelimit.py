"""Rate limits shared by every replica through Redis, with a per-process fallback.

Budgets (API.md "Limits"): every call per client IP; authenticated calls also per
user; Login and Register also get a tighter budget per IP and per email.

Algorithm: GCRA (the generic cell rate algorithm, a.k.a. a leaky bucket as a meter).
Why GCRA rather than a fixed or sliding window counter:
- one number per subject (its "theoretical arrival time"), so one GET and one SET per
  budget, and the key expires by itself exactly when the budget is full again;
- no boundary burst: a fixed window lets 2x the limit through around a window edge, and
  a sliding-window counter only approximates (it assumes uniform traffic in the last window);
- `remaining`, `reset` and `retry-after` fall straight out of the TAT, so the IETF
  RateLimit headers are exact;
- deciding all budgets and then writing only if all allow is trivial (no per-window
  buckets to roll back), which is what keeps a rejected call from spending other budgets.
A budget of N per W seconds allows a burst of N, then one call every W/N seconds.

Redis is the shared source of truth; the decision is ONE Lua script (ratelimit.lua) run by
EVALSHA, pipelined with the call's planned reads (a `ReadPlanner` handed over at wiring:
the session check and the read cache declare what they will read), so a call costs one
round trip. When
Redis is down or slow (the client's socket timeout), the same policies are applied by a
per-process GCRA until a probe (at most every `retry_interval_seconds`) succeeds again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import redis
from grpc_interceptor import ServerInterceptor
from redis.exceptions import NoScriptError, RedisError

from taskapi.interceptors.context import CallState, current_call
from taskapi.interceptors.metrics import Metrics
from taskapi.server.domain.caller import Caller
from taskapi.server.domain.errors import QuotaViolation, ResourceExhausted
from taskapi.server.domain.limits import DEFAULT_AUTH, DEFAULT_IP, DEFAULT_USER, RateLimit

log = logging.getLogger(__name__)

LOGIN = "/taskapi.v1.AuthService/Login"
REGISTER = "/taskapi.v1.AuthService/Register"
# Probes and tooling must not eat the clients' budget (a kubelet probing every 10 s
# alone would spend 90 of 100 calls per 15 min from the node's IP).
DEFAULT_EXEMPT = ("/grpc.health.v1.", "/grpc.reflection.")


class Planned(Protocol):
    """Read-only Redis commands a call will need, planned before it runs."""

    @property
    def commands(self) -> Sequence[tuple[str, ...]]: ...


class ReadPlanner(Protocol):
    """Declared at wiring (taskapi.server.cache.reads.ReadPlan): the limiter runs the plan in
    its round trip and binds the replies to the call; it never learns what they mean."""

    def plan(self, method: str, request: Any, caller: Caller | None) -> Any: ...

    def delivered(self, planned: Any, replies: Sequence[Any]) -> AbstractContextManager[None]: ...


@dataclass(frozen=True)
class Budget:
    """One subject's budget that applies to this call."""

    key: str  # Redis / local key, without the prefix
    subject: str  # shown to the client in QuotaFailure
    limit: RateLimit
    description: str


@dataclass(frozen=True)
class Outcome:
    """The state of one budget after the decision; times in whole seconds, rounded up."""

    budget: Budget
    remaining: int
    reset_seconds: int
    retry_after_seconds: int  # 0 when this budget allowed the call


class LocalLimiter:
    """The GCRA of ratelimit.lua, per process, for when Redis cannot be reached."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._tats: dict[str, float] = {}  # key -> TAT in ms on `clock`
        self._lock = threading.Lock()

    def decide(self, budgets: list[Budget]) -> tuple[bool, list[Outcome]]:
        with self._lock:
            now = self._clock() * 1000.0
            allowed, outcomes, new_tats = True, [], []
            for budget in budgets:
                window = budget.limit.window_seconds * 1000.0
                interval = window / budget.limit.requests
                tat = max(self._tats.get(budget.key, now), now)
                new_tat = tat + interval
                allow_at = new_tat - window
                if allow_at <= now:
                    remaining = math.floor((now + window - new_tat) / interval + 1e-9)
                    outcomes.append(Outcome(budget, remaining, _ceil_s(new_tat - now), 0))
                else:
                    allowed = False
                    outcomes.append(Outcome(budget, 0, _ceil_s(tat - now), max(1, _ceil_s(allow_at - now))))
                new_tats.append(new_tat)
            if allowed:
                for budget, new_tat in zip(budgets, new_tats, strict=True):
                    self._tats[budget.key] = new_tat
                if len(self._tats) > self._max_keys:
                    self._prune(now)
            return allowed, outcomes

    def _prune(self, now: float) -> None:
        # A TAT in the past means a full budget: the same as no entry at all.
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        if len(self._tats) > self._max_keys:  # still too many live subjects: forget all
            log.warning("local rate limiter tracks over %s subjects; resetting it", self._max_keys)
            self._tats.clear()


class RateLimitInterceptor(ServerInterceptor):
    """Decides every call's budgets at once; rejects with RESOURCE_EXHAUSTED.

    Sits after Auth (so the caller is known) and before Validation. Adds the IETF
    `ratelimit-policy` and `ratelimit` response headers on every call it decides, and
    `retry-after` on rejections, through `current_call().response_metadata`.
    """

    def __init__(
        self,
        redis_client: redis.Redis | None,
        *,
        ip: RateLimit = DEFAULT_IP,
        user: RateLimit = DEFAULT_USER,
        auth: RateLimit = DEFAULT_AUTH,
        auth_methods: frozenset[str] = frozenset({LOGIN, REGISTER}),
        exempt_prefixes: tuple[str, ...] = DEFAULT_EXEMPT,
        key_prefix: str = "taskapi:ratelimit:",
        metrics: Metrics | None = None,
        reads: ReadPlanner | None = None,
        retry_interval_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis_client
        self._ip, self._user, self._auth = ip, user, auth
        # Descriptions are fixed per limit: built here, not on every call.
        self._ip_text = _describe(ip, "per client IP")
        self._user_text = _describe(user, "per user")
        what = "for Login and Register"
        self._auth_ip_text = _describe(auth, what + " per IP")
        self._auth_email_text = _describe(auth, what + " per email")
        self._auth_methods = auth_methods
        self._exempt = exempt_prefixes
        self._prefix = key_prefix
        self._metrics = metrics
        self._reads = reads
        self._retry_interval = retry_interval_seconds
        self._clock = clock
        self._local = LocalLimiter(clock=clock)
        script = resources.files("taskapi.interceptors").joinpath("ratelimit.lua").read_text(encoding="utf-8")
        self._script = script
        # EVALSHA needs only the digest; the script is sent (SCRIPT LOAD) once, and again
        # only after Redis answers NOSCRIPT (a restart or SCRIPT FLUSH empties its cache).
        self._sha = hashlib.sha1(script.encode()).hexdigest()
        self._state_lock = threading.Lock()
        self._down_since: float | None = None  # monotonic time Redis was first found down
        self._next_probe = 0.0

    def intercept(self, method: Callable, request: Any, context: Any, method_name: str) -> Any:
        if method_name.startswith(self._exempt):
            return method(request, context)
        state = current_call()
        budgets = self._budgets(method_name, request, state)
        planned = self._reads.plan(method_name, request, state.caller) if self._reads is not None else None
        allowed, outcomes, backend, replies = self._decide(budgets, planned.commands if planned else ())
        if self._metrics is not None:
            self._metrics.ratelimit_decision(allowed=allowed, backend=backend)
        if allowed:
            tightest = min(outcomes, key=lambda o: (o.remaining, o.budget.limit.requests))
            state.response_metadata.extend(_headers(outcomes, tightest))
            if replies is None or self._reads is None:  # not planned, or Redis could not run it
                return method(request, context)
            with self._reads.delivered(planned, replies):
                return method(request, context)
        violated = [o for o in outcomes if o.retry_after_seconds > 0]
        tightest = max(violated, key=lambda o: o.retry_after_seconds)
        retry_after = tightest.retry_after_seconds
        state.response_metadata.extend(_headers(outcomes, tightest))
        state.response_metadata.append(("retry-after", str(retry_after)))
        raise ResourceExhausted(
            f"Too many requests: retry in {retry_after} s.",
            retry_after_seconds=retry_after,
            quota_violations=[QuotaViolation(o.budget.subject, o.budget.description) for o in violated],
        )

    def _budgets(self, method_name: str, request: Any, state: CallState) -> list[Budget]:
        ip = "ip:" + state.client_ip
        budgets = [Budget(ip, ip, self._ip, self._ip_text)]
        if state.caller is not None:
            user = "user:" + state.caller.user_id
            budgets.append(Budget(user, user, self._user, self._user_text))
        if method_name in self._auth_methods:
            auth_ip = "auth-" + ip
            budgets.append(Budget(auth_ip, auth_ip, self._auth, self._auth_ip_text))
            email = str(getattr(request, "email", "")).strip().lower()
            if email:
                # Hashed: an email is personal data and must not sit in Redis keys or
                # travel back in error details (the client knows which email it sent).
                auth_email = "auth-email:" + hashlib.sha256(email.encode()).hexdigest()[:20]
                budgets.append(Budget(auth_email, auth_email, self._auth, self._auth_email_text))
        return budgets

    def _decide(
        self, budgets: list[Budget], commands: Sequence[tuple[str, ...]]
    ) -> tuple[bool, list[Outcome], str, list[Any] | None]:
        """(allowed, outcomes, backend, replies to `commands` or None when they did not run)."""
        if self._redis is not None and self._redis_usable():
            try:
                allowed, outcomes, replies = self._redis_decide(budgets, commands)
            except RedisError as exc:
                self._mark_down(exc)
            else:
                self._mark_up()
                return allowed, outcomes, "redis", (replies if commands else None)
        allowed, outcomes = self._local.decide(budgets)
        return allowed, outcomes, "local", None

    def _redis_decide(
        self, budgets: list[Budget], commands: Sequence[tuple[str, ...]]
    ) -> tuple[bool, list[Outcome], list[Any]]:
        assert self._redis is not None
        keys = [self._prefix + b.key for b in budgets]
        args: list[int] = []
        for b in budgets:
            args += [b.limit.requests, b.limit.window_seconds * 1000]
        for attempt in (1, 2):
            # transaction=False: a plain pipeline, one write and one read on the socket.
            pipe = self._redis.pipeline(transaction=False)
            pipe.evalsha(self._sha, len(keys), *keys, *args)
            for command in commands:
                pipe.execute_command(*command)
            results = pipe.execute(raise_on_error=False)
            reply = results[0]
            if isinstance(reply, NoScriptError) and attempt == 1:
                self._redis.script_load(self._script)
                continue
            if isinstance(reply, Exception):
                raise reply
            break
        # Positive milliseconds round up to >= 1 s, so a rejection never says "retry in 0 s".
        outcomes = [
            Outcome(b, int(reply[1 + 3 * i]), _ceil_s(int(reply[2 + 3 * i])), _ceil_s(int(reply[3 + 3 * i])))
            for i, b in enumerate(budgets)
        ]
        return reply[0] == 1, outcomes, results[1:]

    def _redis_usable(self) -> bool:
        if self._down_since is None:
            return True
        now = self._clock()
        with self._state_lock:
            if now < self._next_probe:
                return False
            # This call probes; the others keep using the local limiter meanwhile.
            self._next_probe = now + self._retry_interval
            return True

    def _mark_down(self, exc: Exception) -> None:
        now = self._clock()
        with self._state_lock:
            self._next_probe = now + self._retry_interval
            if self._down_since is not None:
                return
            self._down_since = now
        log.warning("Redis unreachable for rate limiting (%s); using per-process limits until it is back", exc)

    def _mark_up(self) -> None:
        if self._down_since is None:
            return
        with self._state_lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            log.warning("Redis reachable again for rate limiting after %.1f s", self._clock() - since)


def _headers(outcomes: list[Outcome], tightest: Outcome) -> list[tuple[str, str]]:
    # IETF draft-ietf-httpapi-ratelimit-headers: the policy list names every budget that
    # applies (tightest first); `ratelimit` describes the tightest one.
    limit = tightest.budget.limit
    state = f"limit={limit.requests}, remaining={tightest.remaining}, reset={tightest.reset_seconds}"
    return [
        ("ratelimit-policy", _policy_header(limit, tuple(o.budget.limit for o in outcomes))),
        ("ratelimit", state),
    ]


@functools.lru_cache(maxsize=64)  # a handful of (tightest, limits) combinations ever occur
def _policy_header(tightest: RateLimit, limits: tuple[RateLimit, ...]) -> str:
    policies = [tightest.policy]
    for limit in limits:
        if limit.policy not in policies:
            policies.append(limit.policy)
    return ", ".join(policies)


def _describe(limit: RateLimit, scope: str) -> str:
    return f"{limit.requests} requests per {limit.window_seconds} s {scope}"


def _ceil_s(ms: float) -> int:
    return max(0, math.ceil(ms / 1000.0))
