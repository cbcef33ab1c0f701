"""The `taskapi` command.

taskapi serve          run one replica until SIGTERM/SIGINT, then drain (`--services auth,users`
                       or `--services tasks`: only those services; default all)
taskapi create-admin   create an admin account in MONGODB_URI (never from a request)
taskapi dev            the whole stack locally: replicas, Envoy, Redis, a worker, a mail sink
                       (`--admin-email` creates an admin inside it)
taskapi worker         run background jobs (email) and the outbox relay until SIGTERM
taskapi jobs           background jobs: counts, `dead` (the dead letters), `retry JOB|--all`
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

from taskapi.server.config import ConfigError, Settings, parse_services

if TYPE_CHECKING:
    from taskapi.server.domain.accounts import Accounts

log = logging.getLogger("taskapi")


def configure_logging(level: str, log_format: str = "json") -> None:
    """One formatter, set up once at the entry point: JSON lines, or readable text (LOG_FORMAT);
    no metadata value in grpc's own logs."""
    from taskapi.interceptors.logging import JsonFormatter, TextFormatter, redact_grpc_metadata

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(TextFormatter() if log_format == "text" else JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    redact_grpc_metadata()


def serve(settings: Settings, admin_email: str | None = None) -> int:
    from taskapi.server import affinity, readiness
    from taskapi.server.app import App
    from taskapi.server.domain.errors import ApiError

    if admin_email:  # before anything starts: no usable password is a clear error
        try:
            password = admin_password(settings, interactive=sys.stdin.isatty())
        except ValueError as error:
            print(f"error: --admin-email: {error}", file=sys.stderr)
            return 2
    if settings.cpus is not None:  # before the App starts a thread: they all inherit it
        affinity.pin_process(settings.cpus)
        serving, _, every = affinity.described()
        log.info("threads on CPU %s; password hashing on any of CPU %s", serving, every)
    app = App(settings)
    if admin_email:  # into this process's store (the embedded one lives only here)
        try:
            print(add_admin(app.accounts, admin_email, password), flush=True)
        except ApiError as error:
            print(f"taskapi serve: --admin-email: {error.message}; left as it is", flush=True)
    replica = app.start_replica()
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    status = f"serving gRPC on {replica.address} ({', '.join(settings.services)})"
    log.info("%s", status)
    ports = {readiness.GRPC_PORT: replica.port, readiness.METRICS_PORT: app.metrics_port}
    if replica.watch is not None:
        ports[readiness.WATCH_PORT] = replica.watch.port
    readiness.notify({"READY": "1", "STATUS": status} | {key: str(port) for key, port in ports.items()})
    stopping.wait()
    readiness.notify({"STOPPING": "1"})
    log.info("draining (up to %ss)", settings.shutdown_grace_seconds)
    app.close()
    log.info("stopped")
    # Everything is drained and closed. Skip interpreter teardown: grpcio's C core was seen
    # (once, in CI) to hang there after a signal-driven stop, with the work already done.
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)


NO_SHARED_STORE = (
    "error: MONGODB_URI is not set. Without it each server keeps its accounts in its own memory, "
    "so an admin created by this command would vanish with it. Set MONGODB_URI to the servers' "
    "database, or create the dev stack's admin inside it: taskapi dev --admin-email EMAIL"
)


def admin_password(settings: Settings, *, interactive: bool) -> str:
    """TASKAPI_ADMIN_PASSWORD, else asked for when a person is at the terminal; raises
    ValueError (a message for that person) when there is none or it breaks the rules."""
    from taskapi.server.domain.passwords import MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES

    password = settings.admin_password
    if not password:
        if not interactive:
            raise ValueError("set TASKAPI_ADMIN_PASSWORD: stdin is not a terminal to ask for the password on")
        password = getpass.getpass("Password for the new admin: ")
    size = len(password.encode())
    if size < MIN_PASSWORD_BYTES:
        raise ValueError(f"the admin password must be at least {MIN_PASSWORD_BYTES} bytes")
    if size > MAX_PASSWORD_BYTES:
        raise ValueError(f"the admin password must be at most {MAX_PASSWORD_BYTES} bytes")
    return password


def add_admin(accounts: Accounts, email: str, password: str, name: str = "Administrator") -> str:
    """Create the admin; returns what to tell the operator. Raises ApiError (say, the email is taken)."""
    from taskapi.server.domain.caller import ROLE_ADMIN

    user = accounts.create_user(email, password, name, role=ROLE_ADMIN)
    return f"created admin {user.email} (id {user.id})"


def create_admin(settings: Settings, email: str, name: str) -> int:
    from taskapi.server import store
    from taskapi.server.app import tokens_from
    from taskapi.server.cache.sessions import RedisSessionCache
    from taskapi.server.cache.shared import SharedCache
    from taskapi.server.domain.accounts import Accounts
    from taskapi.server.domain.errors import ApiError
    from taskapi.server.domain.passwords import PasswordHasher

    if not settings.mongodb_uri:
        print(NO_SHARED_STORE, file=sys.stderr)
        return 2
    try:
        password = admin_password(settings, interactive=sys.stdin.isatty())
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    store.connect(settings, (store.ACCOUNTS,))
    accounts = Accounts(
        users=store.MongoUserStore(),
        sessions=store.MongoSessionStore(),
        session_cache=RedisSessionCache(SharedCache(None)),
        hasher=PasswordHasher(rounds=settings.bcrypt_rounds, concurrency=1),
        tokens=tokens_from(settings),
        refresh_ttl_seconds=settings.refresh_token_ttl_seconds,
        reuse_grace_seconds=settings.refresh_reuse_grace_seconds,
        secret=settings.jwt_secret,
    )
    try:
        print(add_admin(accounts, email, password, name))
    except ApiError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(sys.argv[1:] if argv is None else argv)
    except ConfigError as error:  # a bad environment value: say which, no traceback
        print(f"taskapi: {error}", file=sys.stderr)
        return 2


def _run(argv: list[str]) -> int:
    if argv[:1] == ["dev"]:  # `dev` parses its own flags (argparse REMAINDER drops `--x` ones)
        settings = Settings.from_env()
        configure_logging(settings.log_level, settings.log_format or "text")  # a developer's console
        from taskapi.server.dev import main as dev_main

        return dev_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="taskapi", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run one gRPC replica")
    serve_parser.add_argument(
        "--services",
        metavar="LIST",
        help="the services this replica serves: auth, tasks, users, separated by commas, or all "
        "(default TASKAPI_SERVICES, else all)",
    )
    serve_parser.add_argument(
        "--admin-email",
        metavar="EMAIL",
        help="create this admin in the store at start, if absent (password: TASKAPI_ADMIN_PASSWORD); "
        "for an embedded store, which no other process can reach",
    )
    admin = commands.add_parser("create-admin", help="create an admin account")
    admin.add_argument("--email", required=True)
    admin.add_argument("--name", default="Administrator")
    commands.add_parser("dev", help="run the whole stack locally (see `taskapi dev --help`)")
    commands.add_parser("worker", help="run background jobs and the outbox relay")
    jobs = commands.add_parser("jobs", help="background jobs: counts, dead letters, retry").add_subparsers(
        dest="action"
    )
    jobs.add_parser("counts", help="jobs per state (the default)")
    jobs.add_parser("dead", help="the dead-letter list")
    retry = jobs.add_parser("retry", help="queue dead jobs again")
    retry.add_argument("jobs", nargs="*", metavar="JOB", help="job ids, as `taskapi jobs dead` shows them")
    retry.add_argument("--all", action="store_true", help="every dead job")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format or "json")
    if args.command == "serve":
        if args.services is not None:
            settings = dataclasses.replace(settings, services=parse_services(args.services))
        if args.admin_email and not settings.serves_accounts:
            print("error: --admin-email needs the account services (--services auth,users)", file=sys.stderr)
            return 2
        return serve(settings, args.admin_email)
    if args.command == "worker":
        from taskapi.server import worker

        return worker.serve(settings)
    if args.command == "jobs":
        from taskapi.server.jobs import admin as jobs_admin

        return jobs_admin.main(settings, args, sys.stdout, sys.stderr)
    return create_admin(settings, args.email, args.name)


if __name__ == "__main__":
    sys.exit(main())
