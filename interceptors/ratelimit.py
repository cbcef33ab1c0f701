"""Rate limits shared by every replica through Redis, with a per-process fallback.

Budgets (API.md "Limits"): every call per client IP; authenticated calls also per
user; Login and Register also get a tighter budget per IP, and Register one per email.

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

Login throttling (failed sign-ins, LoginThrottle). A per-email budget on every Login
attempt would hand anyone a lockout of the real owner (spend it, from anywhere), so
Login has none. Failures are counted instead, keyed by a hash of the email:
- per (email, IP): a few free failures (typos), then each attempt waits a backoff that
  doubles with every failure, up to the window; a correct password clears the record;
- per email: a GCRA over failures from every address. Once it is spent, addresses that
  have failed for this email in the window wait for a free cell (or for their own
  record to expire); an address with no recent failures is NOT held back, so the owner
  signing in from their own address gets through whatever others guessed.
What this leaves an attacker: per email, the bound's failures per window from addresses
that keep guessing, plus one guess per fresh address (each then held back); per address,
the Login/Register budget across all emails (credential stuffing). A wrong email and a
wrong password count alike, so a refusal says nothing about whether an account exists.
The owner is held back only from an address that itself failed while the email's bound
was spent, and at most until that address's failures are forgotten.
Each allowed Login is charged as a failure inside the decision (so concurrent guesses
cannot all pass one check) and refunded after the call unless it failed with
LOGIN_FAILED: one more round trip, on Login only.

Redis is the shared source of truth; the decision is ONE Lua script (ratelimit.lua) run by
EVALSHA, which also runs the call's planned reads (a `ReadPlanner` handed over at wiring:
the session check and the read cache declare what they will read), so a call costs one
round trip.

Keys carry hash tags: `{u:<user id>}` (the user's budget, and the session and cache entries
the plan reads), `{ip:<address>}` (the IP and Login/Register-per-IP budgets), `{e:<email
hash>}` (Register per email, the failed sign-in records). On Redis Cluster a script may only
touch one slot, so the decision runs as one script per tag group, pipelined (one round trip
per node, in parallel): each group decides its own budgets and writes only if they allow;
when a group refuses, the groups that allowed are refunded, so a rejected call still
spends nothing. On one server (or a Sentinel-managed primary) it is a single script
(`ratelimit_redis.py`). When
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
from typing import Any, Protocol

import grpc
import redis
from grpc_interceptor import ServerInterceptor
from redis.cluster import RedisCluster

from taskapi.interceptors.context import CallState, Continuation, current_call
from taskapi.interceptors.metrics import Metrics
from taskapi.interceptors.ratelimit_redis import (
    REDIS_DOWN,
    Budget,
    Decision,
    LoginGate,
    Outcome,
    RedisDecider,
    ceil_s,
)
from taskapi.server.domain.caller import Caller
from taskapi.server.domain.errors import ApiError, QuotaViolation, ResourceExhausted
from taskapi.server.domain.limits import (
    DEFAULT_AUTH,
    DEFAULT_IP,
    DEFAULT_LOGIN,
    DEFAULT_USER,
    LOGIN_FAILED_REASON,
    LoginThrottle,
    RateLimit,
)

log = logging.getLogger(__name__)

LOGIN = "/taskapi.v1.AuthService/Login"
REGISTER = "/taskapi.v1.AuthService/Register"
# Probes and tooling must not eat the clients' budget (a kubelet probing every 10 s
# alone would spend 90 of 100 calls per 15 min from the node's IP).
DEFAULT_EXEMPT = ("/grpc.health.v1.", "/grpc.reflection.")


class ReadPlanner(Protocol):
    """Declared at wiring (taskapi.server.cache.reads.ReadPlan): the limiter runs a call's
    planned reads in its round trip and binds the replies to the call; it never learns what
    they mean. `plan` returns an object with `commands`, or None."""

    def plan(self, method: str, request: Any, caller: Caller | None) -> Any: ...

    def delivered(self, planned: Any, replies: Sequence[Any], epochs: Sequence[str]) -> AbstractContextManager[None]:
        """`epochs[i]`: the cache epoch of the node `replies[i]` was read on."""


# A call less than this early for its turn (at most half an interval) is on time, and
# `remaining`, `reset` and `retry-after` count from the same instant. The times are floating-point
# ms and a TAT is a sum of fractional intervals, so without it a burst that should just fit can
# land a fraction of a µs past its turn, be refused "for 1 s" and hear one call fewer remains:
# (now + window) - window is not always now. Mirrored in ratelimit.lua.
SLACK_MS = 1.0


class LocalLimiter:
    """The GCRA of ratelimit.lua, per process, for when Redis cannot be reached."""

    def __init__(
        self,
        *,
        login: LoginThrottle = DEFAULT_LOGIN,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._login = login
        self._clock = clock
        self._max_keys = max_keys
        self._tats: dict[str, float] = {}  # key -> TAT in ms on `clock` (budgets and emails' failures)
        self._pairs: dict[str, tuple[int, float]] = {}  # (email, IP) -> (failures, last attempt in ms)
        self._lock = threading.Lock()

    def decide(self, budgets: list[Budget], gate: LoginGate | None = None) -> tuple[bool, list[Outcome], float]:
        """(allowed, outcomes, the failure charged to the gate's email in ms)."""
        with self._lock:
            now = self._clock() * 1000.0
            allowed, outcomes, new_tats, charged = True, [], [], 0.0
            for budget in budgets:
                window = budget.limit.window_seconds * 1000.0
                interval = window / budget.limit.requests
                tat = max(self._tats.get(budget.key, now), now)
                new_tat = tat + interval
                allow_at = new_tat - window
                ahead = now + min(SLACK_MS, interval / 2)  # the instant this decision counts as
                if allow_at <= ahead:
                    remaining = max(0, math.floor((ahead + window - new_tat) / interval))
                    outcomes.append(Outcome(budget, remaining, ceil_s(new_tat - ahead), 0))
                else:
                    allowed = False
                    outcomes.append(Outcome(budget, 0, ceil_s(tat - ahead), max(1, ceil_s(allow_at - ahead))))
                new_tats.append(new_tat)
            if gate is not None:
                failures, last = self._pair(gate.pair_key, now)
                email_tat = max(self._tats.get(gate.email_key, now), now)
                wait = login_wait_until(self._login, failures, last, email_tat, now) - now
                if wait > 0:
                    allowed = False
                    outcomes.append(Outcome(gate.budget, 0, ceil_s(wait), ceil_s(wait)))
            if allowed:
                for budget, new_tat in zip(budgets, new_tats, strict=True):
                    self._tats[budget.key] = new_tat
                if gate is not None:  # charged as a failure up front, as ratelimit.lua does
                    self._pairs[gate.pair_key] = (failures + 1, now)
                    new_tat = min(email_tat + self._login.interval_ms, now + self._login.window_ms)
                    self._tats[gate.email_key] = new_tat
                    charged = new_tat - email_tat
                if len(self._tats) + len(self._pairs) > self._max_keys:
                    self._prune(now)
            return allowed, outcomes, charged

    def refund(self, gate: LoginGate, charged_ms: float, *, success: bool) -> None:
        """Undo a Login's up-front charge; on success also forget the address's failures."""
        with self._lock:
            now = self._clock() * 1000.0
            failures, last = self._pair(gate.pair_key, now)
            if success or failures <= 1:
                self._pairs.pop(gate.pair_key, None)
            else:
                self._pairs[gate.pair_key] = (failures - 1, last)
            tat = self._tats.get(gate.email_key)
            if tat is not None:
                refunded = tat - charged_ms
                if refunded <= now:
                    del self._tats[gate.email_key]
                else:
                    self._tats[gate.email_key] = refunded

    def _pair(self, key: str, now: float) -> tuple[int, float]:
        failures, last = self._pairs.get(key, (0, now))
        if last + self._login.window_ms <= now:  # forgotten, as the Redis record expires
            return 0, now
        return failures, last

    def _prune(self, now: float) -> None:
        # A TAT in the past means a full budget: the same as no entry at all.
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        window = self._login.window_ms
        self._pairs = {key: pair for key, pair in self._pairs.items() if pair[1] + window > now}
        if len(self._tats) + len(self._pairs) > self._max_keys:  # still too many live subjects: forget all
            log.warning("local rate limiter tracks over %s subjects; resetting it", self._max_keys)
            self._tats.clear()
            self._pairs.clear()


def login_wait_until(throttle: LoginThrottle, failures: int, last: float, email_tat: float, now: float) -> float:
    """When this (email, IP) may try again, in ms; `now` when it may now. Mirrors ratelimit.lua."""
    window = throttle.window_ms
    wait_until = now
    if failures > 0 and failures >= throttle.free_failures:
        doublings = min(failures - throttle.free_failures, 40)  # past 2^40 s the window caps it anyway
        wait_until = last + min(window, throttle.backoff_seconds * 1000.0 * 2**doublings)
    cell_at = email_tat + throttle.interval_ms - window  # when the email can take one more failure
    if failures > 0 and cell_at > now + min(SLACK_MS, throttle.interval_ms / 2):
        wait_until = max(wait_until, min(cell_at, last + window))
    return wait_until


class RateLimitInterceptor(ServerInterceptor):
    """Decides every call's budgets at once; rejects with RESOURCE_EXHAUSTED.

    Sits after Auth (so the caller is known) and before Validation. Adds the IETF
    `ratelimit-policy` and `ratelimit` response headers on every call it decides, through
    `current_call().response_metadata`; a rejection's `retry-after` is the Errors layer's, as
    for every retryable error (interceptors/status.py).
    """

    def __init__(
        self,
        redis_client: redis.Redis | RedisCluster | None,
        *,
        ip: RateLimit = DEFAULT_IP,
        user: RateLimit = DEFAULT_USER,
        auth: RateLimit = DEFAULT_AUTH,
        login: LoginThrottle = DEFAULT_LOGIN,
        auth_methods: frozenset[str] = frozenset({LOGIN, REGISTER}),
        login_method: str = LOGIN,
        exempt_prefixes: tuple[str, ...] = DEFAULT_EXEMPT,
        key_prefix: str = "taskapi:",
        metrics: Metrics | None = None,
        reads: ReadPlanner | None = None,
        retry_interval_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ip, self._user, self._auth, self._login = ip, user, auth, login
        # Descriptions are fixed per limit: built here, not on every call.
        self._ip_text = _describe(ip, "per client IP")
        self._user_text = _describe(user, "per user")
        self._auth_ip_text = _describe(auth, "for Login and Register per IP")
        self._auth_email_text = _describe(auth, "for Register per email")
        self._login_text = (
            f"failed sign-ins back off per email and address; past {login.email_failures.requests} "
            f"failures per {login.email_failures.window_seconds} s for one email, addresses that failed wait"
        )
        self._auth_methods = auth_methods
        self._login_method = login_method
        self._exempt = exempt_prefixes
        self._metrics = metrics
        self._reads = reads
        self._retry_interval = retry_interval_seconds
        self._clock = clock
        self._local = LocalLimiter(login=login, clock=clock)
        self._remote = None if redis_client is None else RedisDecider(redis_client, prefix=key_prefix, login=login)
        self._state_lock = threading.Lock()
        self._down_since: float | None = None  # monotonic time Redis was first found down
        self._next_probe = 0.0

    def intercept(self, method: Continuation, request: Any, context: grpc.ServicerContext, method_name: str) -> Any:
        if method_name.startswith(self._exempt):
            return method(request, context)
        state = current_call()
        email = _email_hash(request) if method_name in self._auth_methods else None
        budgets = self._budgets(method_name, email, state)
        gate = self._login_gate(email, state) if method_name == self._login_method else None
        planned = self._reads.plan(method_name, request, state.caller) if self._reads is not None else None
        decision = self._decide(budgets, gate, planned.commands if planned is not None else ())
        outcomes = decision.outcomes
        if self._metrics is not None:
            self._metrics.ratelimit_decision(allowed=decision.allowed, backend=decision.backend)
        if decision.allowed:
            tightest = min(outcomes, key=lambda o: (o.remaining, o.budget.limit.requests))
            state.response_metadata.extend(_headers(outcomes, tightest))
            if gate is not None:
                return self._settle_login(gate, decision, method, request, context)
            if decision.replies is None or self._reads is None:  # not planned, or Redis could not run it
                return method(request, context)
            with self._reads.delivered(planned, decision.replies, decision.epochs or ()):
                return method(request, context)
        violated = [o for o in outcomes if o.retry_after_seconds > 0]
        tightest = max(violated, key=lambda o: o.retry_after_seconds)
        retry_after = tightest.retry_after_seconds
        state.response_metadata.extend(_headers(outcomes, tightest))
        raise ResourceExhausted(
            f"Too many requests: retry in {retry_after} s.",
            retry_after_seconds=retry_after,
            quota_violations=[QuotaViolation(o.budget.subject, o.budget.description) for o in violated],
        )

    def _budgets(self, method_name: str, email: str | None, state: CallState) -> list[Budget]:
        # Keys: the subject's hash tag first (the module docstring), so one user's, one
        # address's or one email's keys share a Cluster slot.
        ip_tag = "{ip:" + state.client_ip + "}"
        budgets = [Budget(ip_tag + ":ratelimit", "ip:" + state.client_ip, self._ip, self._ip_text)]
        if state.caller is not None:
            user_id = state.caller.user_id
            # The tag the session and read cache use too (taskapi.server.cache): one slot per user.
            budgets.append(Budget("{u:" + user_id + "}:ratelimit", "user:" + user_id, self._user, self._user_text))
        if method_name in self._auth_methods:
            auth_ip = "auth-ip:" + state.client_ip
            budgets.append(Budget(ip_tag + ":ratelimit:auth", auth_ip, self._auth, self._auth_ip_text))
            # Not on Login: a per-email budget spent by every attempt is a lockout anyone can
            # hand the owner. Login's per-email limit counts failures only (the login gate).
            if email and method_name != self._login_method:
                budgets.append(
                    Budget("{e:" + email + "}:ratelimit:auth", "auth-email:" + email, self._auth, self._auth_email_text)
                )
        return budgets

    def _login_gate(self, email: str | None, state: CallState) -> LoginGate | None:
        if not email:
            return None  # no email: validation refuses the call before any password check
        tag = "{e:" + email + "}"
        budget = Budget(tag + ":login-email", "login-email:" + email, self._login.email_failures, self._login_text)
        return LoginGate(f"{tag}:login-ip:{state.client_ip}", budget.key, budget)

    def _settle_login(
        self, gate: LoginGate, decision: Decision, method: Continuation, request: Any, context: grpc.ServicerContext
    ) -> Any:
        """Run the Login; keep its failure charge only if it failed as a wrong email or password."""
        try:
            response = method(request, context)
        except ApiError as error:
            if error.reason != LOGIN_FAILED_REASON:
                self._refund(gate, decision, success=False)
            raise
        except BaseException:
            self._refund(gate, decision, success=False)
            raise
        self._refund(gate, decision, success=True)
        return response

    def _refund(self, gate: LoginGate, decision: Decision, *, success: bool) -> None:
        if decision.backend == "local":
            self._local.refund(gate, decision.charged_ms, success=success)
            return
        assert self._remote is not None
        try:
            self._remote.refund_login(gate, decision.charged_ms, success=success)
        except REDIS_DOWN as exc:  # the charge stays: one failure too many, forgotten with the window
            self._mark_down(exc)

    def _decide(self, budgets: list[Budget], gate: LoginGate | None, commands: Sequence[tuple[str, ...]]) -> Decision:
        if self._remote is not None and self._redis_usable():
            try:
                decision = self._remote.decide(budgets, gate, commands)
            except REDIS_DOWN as exc:
                self._mark_down(exc)
            else:
                self._mark_up()
                return decision
        allowed, outcomes, charged = self._local.decide(budgets, gate)
        return Decision(allowed, outcomes, "local", charged)

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
        # The class only: redis-py's messages can carry a whole client's repr (addresses, options).
        log.warning(
            "Redis unreachable for rate limiting (%s); using per-process limits until it is back",
            exc.__class__.__name__,
        )

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


def _email_hash(request: Any) -> str | None:
    """The request's email, normalized and hashed: an email is personal data and must not
    sit in Redis keys or travel back in error details (the client knows which it sent)."""
    email = str(getattr(request, "email", "")).strip().lower()
    return hashlib.sha256(email.encode()).hexdigest()[:20] if email else None


def _describe(limit: RateLimit, scope: str) -> str:
    return f"{limit.requests} requests per {limit.window_seconds} s {scope}"
