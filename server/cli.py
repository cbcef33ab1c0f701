"""The `taskapi` command.

taskapi serve          run one replica until SIGTERM/SIGINT, then drain
taskapi create-admin   create the first admin account (never from a request)
taskapi dev            the whole stack locally: replicas, Envoy, Redis
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import sys
import threading

from server.config import Settings

log = logging.getLogger("taskapi")


def configure_logging(level: str) -> None:
    """One JSON formatter, set up once at the entry point; no metadata value in grpc's own logs."""
    from interceptors.logging import JsonFormatter, redact_grpc_metadata

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    redact_grpc_metadata()


def serve(settings: Settings) -> int:
    from server.app import App

    app = App(settings)
    replica = app.start_replica()
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    log.info("serving gRPC on %s", replica.address)
    stopping.wait()
    log.info("draining (up to %ss)", settings.shutdown_grace_seconds)
    app.close()
    log.info("stopped")
    # Everything is drained and closed. Skip interpreter teardown: grpcio's C core was seen
    # (once, in CI) to hang there after a signal-driven stop, with the work already done.
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)


def create_admin(settings: Settings, email: str, name: str) -> int:
    from interceptors.context import ROLE_ADMIN
    from interceptors.errors import ApiError
    from server import store
    from server.auth import Accounts, Tokens
    from server.passwords import MIN_PASSWORD_BYTES, PasswordHasher
    from server.shared_cache import SharedCache

    if not settings.mongodb_uri:
        print("warning: MONGODB_URI is not set; the admin goes to a throwaway in-memory store", file=sys.stderr)
    password = settings.admin_password or getpass.getpass("Password for the new admin: ")
    if len(password.encode()) < MIN_PASSWORD_BYTES:  # the upper bound is PasswordHasher's to enforce
        print(f"error: the password must be at least {MIN_PASSWORD_BYTES} bytes", file=sys.stderr)
        return 2
    store.connect(settings)
    hasher = PasswordHasher(rounds=settings.bcrypt_rounds, concurrency=1)
    accounts = Accounts(settings, hasher, Tokens(settings), SharedCache(None))
    try:
        user = accounts.create_user(email, password, name, role=ROLE_ADMIN)
    except ApiError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    print(f"created admin {user.email} (id {user.id})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dev"]:  # `dev` parses its own flags (argparse REMAINDER drops `--x` ones)
        configure_logging(Settings.from_env().log_level)
        from server.dev import main as dev_main

        return dev_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="taskapi", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run one gRPC replica")
    admin = commands.add_parser("create-admin", help="create an admin account")
    admin.add_argument("--email", required=True)
    admin.add_argument("--name", default="Administrator")
    commands.add_parser("dev", help="run the whole stack locally (see `taskapi dev --help`)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    if args.command == "serve":
        return serve(settings)
    return create_admin(settings, args.email, args.name)


if __name__ == "__main__":
    sys.exit(main())
