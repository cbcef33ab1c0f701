"""The interceptor chain, in the one order that is correct, and why.

The first interceptor is the outermost: it sees the call first and its end last.

    1. Metrics      outermost, so every call is counted and timed, including calls
                    rejected further in (auth, rate limit, validation).
    2. CallState    binds method, client IP and request id for everything inside, and
                    sends the response metadata (rate-limit headers, x-request-id).
    3. Logging      inside CallState (it logs the request id, caller and client IP from
                    it), outside Errors (it logs the final status code).
    4. Errors       turns every exception from below into a status with details, so
                    what is outside it only ever sees a finished status.
    5. Token        verifies the bearer token (no I/O) and names the caller.
    6. RateLimit    after Token, because the per-user budget needs the caller; one Redis
                    round trip that also prefetches what Access and the handler read.
    7. Access       confirms the session is live (revoked, disabled, current role) from
                    the prefetched read, and applies the proto-declared access level.
    8. Validation   checks field rules once the caller may call the method at all.

Metrics, Logging and RateLimit are optional here so tests can build a chain without them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from google.protobuf.descriptor import ServiceDescriptor
from grpc_interceptor import ServerInterceptor

from interceptors.auth import AccessInterceptor, AccessPolicy, Authenticator, TokenInterceptor
from interceptors.call_state import CallStateInterceptor, Network
from interceptors.logging import LoggingInterceptor
from interceptors.metrics import MetricsInterceptor
from interceptors.ratelimit import RateLimitInterceptor
from interceptors.status import ErrorInterceptor, Translator
from interceptors.validation import ValidationInterceptor


def build_chain(
    *,
    authenticator: Authenticator,
    services: Sequence[ServiceDescriptor],
    trusted_proxies: Iterable[Network],
    translators: Iterable[Translator] = (),
    metrics: MetricsInterceptor | None = None,
    logging: LoggingInterceptor | None = None,
    ratelimit: RateLimitInterceptor | None = None,
) -> list[ServerInterceptor]:
    policy = AccessPolicy(services)
    chain: list[ServerInterceptor | None] = [
        metrics,
        CallStateInterceptor(trusted_proxies),
        logging,
        ErrorInterceptor(translators),
        TokenInterceptor(authenticator, policy),
        ratelimit,
        AccessInterceptor(authenticator, policy),
        ValidationInterceptor(),
    ]
    return [interceptor for interceptor in chain if interceptor is not None]
