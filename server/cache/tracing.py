"""Redis round trips as client spans, for the one client the wiring builds when tracing is on.

Subclasses rather than redis-py's global instrumentation (opentelemetry-instrumentation-redis
patches every client in the process): only the clients built with a tracer pay for spans,
and with tracing off `connect_redis` builds plain `redis.Redis`, so the request path is
exactly what it was. A pipeline (the limiter's one round trip, the cache's reads) is one
span naming its commands; a single command (a script's EVALSHA, a SET) is one span.
Only command names are recorded, never keys or values (keys hold hashed emails and ids).
Spans are only children: a command outside any span (a worker's idle polling of the job
queue, a cache replay) is not traced, rather than each becoming a trace of its own.
"""

from __future__ import annotations

from typing import Any

import redis
from opentelemetry.trace import SpanKind, Tracer, get_current_span

_SYSTEM = {"db.system.name": "redis", "db.system": "redis"}


class TracedRedis(redis.Redis):
    """`redis.Redis` whose commands and pipelines are spans of `tracer`."""

    tracer: Tracer

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if not get_current_span().is_recording():
            return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        name = str(args[0]) if args else "COMMAND"
        attributes = {**_SYSTEM, "db.operation.name": name}
        with self.tracer.start_as_current_span(f"redis {name}", kind=SpanKind.CLIENT, attributes=attributes):
            return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> redis.client.Pipeline:
        pipe = super().pipeline(transaction, shard_hint)
        # Same object, traced class: Pipeline's constructor takes the client's private state,
        # and TracedPipeline adds no state of its own beyond the tracer.
        pipe.__class__ = TracedPipeline
        pipe.tracer = self.tracer  # type: ignore[attr-defined]  # TracedPipeline declares it
        return pipe


class TracedPipeline(redis.client.Pipeline):
    tracer: Tracer

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        if not get_current_span().is_recording():
            return super().execute(raise_on_error)
        names = [str(args[0]) for args, _options in self.command_stack if args]
        attributes: dict[str, str | int] = {
            **_SYSTEM,
            "db.operation.name": "PIPELINE",
            "db.operation.batch.size": len(names),
            "db.query.summary": " ".join(names)[:200],
        }
        with self.tracer.start_as_current_span("redis PIPELINE", kind=SpanKind.CLIENT, attributes=attributes):
            return super().execute(raise_on_error)


def traced_client(client: redis.Redis, tracer: Tracer) -> redis.Redis:
    """`client`, its commands traced from now on (the same connection pool)."""
    client.__class__ = TracedRedis
    client.tracer = tracer  # type: ignore[attr-defined]  # TracedRedis declares it
    return client
