"""The FastAPI peer issue 14 measures Task API against, doing the same work per call.

Issue 14's goal is Task API "at least as fast as the FastAPI peer despite the extra Envoy hop";
its figures for that peer came from another machine, so bench_peers.py runs this one beside
Task API on the same box, in the same run. What it does per call is what the issue names (a
JWT check, a Redis rate limit, a Redis read cache, an in-memory store), written the lean way a
competent FastAPI service would:

- the bearer token verified with PyJWT in a dependency (HS256; `sub`, `exp`, `iat`, `iss` and
  `aud` required and the issuer and audience checked, as Task API checks its own);
- the rate limit (a fixed window per user: INCR, EXPIRE) and the cache lookup sent to Redis
  in one pipelined round trip, as Task API's one EVALSHA decides and reads in one;
- a cache hit returned as the cached JSON bytes, no model validation or re-encoding; a miss
  read from the in-memory store, encoded once and written back with a TTL;
- every call in uvicorn's access log (Task API logs every call too), written where stdout goes.

Served by uvicorn with one worker, uvloop and httptools (`uvicorn[standard]`, what its docs
recommend for production). Not part of the product: nothing outside bench/ imports it.

    .venv/bin/python bench/peer_fastapi.py --fd 3 --data tasks.json
        (REDIS_URL and PEER_JWT_SECRET in the environment)

`--fd` is a listening TCP socket inherited from the caller (bench_peers.py binds port 0 and
passes it on), so no port is picked free and released for the peer to bind.

`--data` is a JSON object {user id: [task, ...]}: the tasks, as Task API's REST answers them.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at runtime, and
# `Depends(caller)` names a local of build() that a string annotation could not be resolved in.
import argparse
import json
import os
import socket
import time
from pathlib import Path
from typing import Annotated, Any

import jwt
import redis.asyncio as aioredis
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Response

WINDOW_SECONDS = 900
LIMIT = 10**9  # as every bench's limits: decided on every call, never reached
CACHE_TTL_SECONDS = 300
ISSUER, AUDIENCE = "peer", "peer-api"


def build(users: dict[str, list[dict[str, Any]]], secret: str, redis_url: str) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    redis = aioredis.from_url(redis_url)
    tasks = {(owner, task["id"]): task for owner, owned in users.items() for task in owned}

    def caller(authorization: Annotated[str, Header()] = "") -> str:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "missing bearer token")
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                issuer=ISSUER,
                audience=AUDIENCE,
                options={"require": ["sub", "exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError:
            raise HTTPException(401, "invalid token") from None
        return str(claims["sub"])

    async def limited_lookup(user: str, key: str) -> bytes | None:
        """One round trip: count the call in this window and read the cache entry."""
        window = int(time.time()) // WINDOW_SECONDS
        bucket = f"peer:limit:{user}:{window}"
        async with redis.pipeline(transaction=False) as pipe:
            pipe.incr(bucket)
            pipe.expire(bucket, WINDOW_SECONDS)
            pipe.get(key)
            count, _, cached = await pipe.execute()
        if count > LIMIT:
            retry = WINDOW_SECONDS - int(time.time()) % WINDOW_SECONDS
            raise HTTPException(429, "rate limit exceeded", headers={"Retry-After": str(retry)})
        return cached  # type: ignore[no-any-return]  # redis-py's pipeline results are untyped

    async def fill(key: str, value: object) -> bytes:
        body = json.dumps(value, separators=(",", ":")).encode()
        await redis.set(key, body, ex=CACHE_TTL_SECONDS)
        return body

    @app.get("/api/v1/tasks/{task_id}")
    async def get_task(task_id: str, user: Annotated[str, Depends(caller)]) -> Response:
        key = f"peer:task:{user}:{task_id}"  # the owner in the key: a hit is the caller's own task
        body = await limited_lookup(user, key)
        if body is None:
            task = tasks.get((user, task_id))
            if task is None:
                raise HTTPException(404, "task not found")
            body = await fill(key, task)
        return Response(body, media_type="application/json")

    @app.get("/api/v1/tasks")
    async def list_tasks(
        user: Annotated[str, Depends(caller)], page_size: Annotated[int, Query(alias="pageSize", ge=1, le=100)] = 20
    ) -> Response:
        key = f"peer:list:{user}:{page_size}"
        body = await limited_lookup(user, key)
        if body is None:
            page = users.get(user, [])[:page_size]
            body = await fill(key, {"tasks": page, "nextPageToken": ""})
        return Response(body, media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fd", type=int, required=True, help="an inherited listening TCP socket")
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    users = json.loads(args.data.read_text())
    app = build(users, os.environ["PEER_JWT_SECRET"], os.environ["REDIS_URL"])
    listener = socket.socket(fileno=args.fd)  # family and type read from the descriptor
    config = uvicorn.Config(app, workers=1, loop="uvloop", http="httptools", access_log=True)
    uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    main()
