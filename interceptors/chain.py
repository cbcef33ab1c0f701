"""The interceptor chain, in the one order that is correct, and why.

    1. CallState    binds method, client IP and request id for everything inside, and
                    sends the response metadata (rate-limit headers, x-request-id).
    2. Errors       turns every exception from below into a status with details, so
                    what is outside it only ever sees a finished status.
    3. Auth         resolves the caller and applies the proto-declared access level.
    4. Validation   checks field rules once the caller may call the method at all.

Outer layers (metrics, logging) and the rate limiter are inserted by the server's
wiring around these; see `build_chain`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from google.protobuf.descriptor import ServiceDescriptor
from grpc_interceptor import ServerInterceptor

from interceptors.auth import Authenticator, AuthInterceptor
from interceptors.call_state import CallStateInterceptor, Network
from interceptors.status import ErrorInterceptor, Translator
from interceptors.validation import ValidationInterceptor


def build_chain(
    *,
    authenticator: Authenticator,
    services: Sequence[ServiceDescriptor],
    trusted_proxies: Iterable[Network],
    translators: Iterable[Translator] = (),
) -> list[ServerInterceptor]:
    return [
        CallStateInterceptor(trusted_proxies),
        ErrorInterceptor(translators),
        AuthInterceptor(authenticator, services),
        ValidationInterceptor(),
    ]
