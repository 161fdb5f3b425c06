"""The ``packagerepo`` command: run the stack or its parts, manage users,
validate workflow files, and talk to a running service (``login``,
``submit``, ``jobs``; see ``packagerepo.client``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from packagerepo.config import Settings

BROKEN_PIPE_STATUS = 141
"""What a shell reports for a program its reader left (128 + SIGPIPE)."""


def main(argv: list[str] | None = None) -> int:
    """The command; a reader that stops early (``| head``) ends it quietly."""
    try:
        status = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python's own flush at exit would fail again and print a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE_STATUS
    return status


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["validate"]:
        from loader.cli import validate_command

        return validate_command(argv[1:])

    parser = _parser()
    arguments = parser.parse_args(argv)
    if not hasattr(arguments, "handler"):
        parser.print_help()
        return 2
    handler: Callable[[argparse.Namespace], int] = arguments.handler
    return handler(arguments)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="packagerepo",
        description="Run the PackageRepo stack or its parts, manage users, "
        "validate workflow files, and talk to a running service.",
    )
    commands = parser.add_subparsers(title="commands")

    run = commands.add_parser("run", help="start redis, workers and the API")
    run.set_defaults(handler=_run)

    api = commands.add_parser("api", help="serve the API under gunicorn")
    api.add_argument("--bind", default=None, help="host:port (default 127.0.0.1:PORT)")
    api.add_argument("--workers", type=int, default=None)
    api.set_defaults(handler=_api)

    worker = commands.add_parser("worker", help="run one Celery worker")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--name", default=None, help="Celery node name")
    worker.add_argument(
        "--webhooks",
        action="store_true",
        help="deliver webhooks instead of running jobs (a queue of their own)",
    )
    worker.set_defaults(handler=_worker)

    user = commands.add_parser("user", help="manage users")
    user_commands = user.add_subparsers(title="user commands")
    add = user_commands.add_parser("add", help="create a user")
    add.add_argument("username")
    add.add_argument("--tenant", required=True)
    add.add_argument("--scopes", default="read")
    add.add_argument(
        "--password-env",
        default="PACKAGEREPO_PASSWORD",
        help="environment variable holding the password (else prompted)",
    )
    add.add_argument(
        "--replace",
        action="store_true",
        help="overwrite an existing user: new password, tenant and scopes",
    )
    add.set_defaults(handler=_user_add)
    delete = user_commands.add_parser(
        "delete", help="remove a user (their tokens stop working)"
    )
    delete.add_argument("username")
    delete.set_defaults(handler=_user_delete)

    secret = commands.add_parser(
        "webhook-secret", help="print the secret a tenant's webhooks are signed with"
    )
    secret.add_argument("tenant")
    secret.set_defaults(handler=_webhook_secret)

    commands.add_parser(
        "validate",
        help="validate workflow files (packagerepo validate --help for its options)",
    )

    from packagerepo.client import add_client_commands

    add_client_commands(commands)
    return parser


def _run(_arguments: argparse.Namespace) -> int:
    from packagerepo.stack import run_stack

    return run_stack()


def _api(arguments: argparse.Namespace) -> int:
    from packagerepo.metrics import MULTIPROC_ENV, fresh_multiproc_dir
    from packagerepo.stack import gunicorn_command

    # Counts left by an earlier run must not be added to this one's.
    configured = os.environ.get(MULTIPROC_ENV)
    directory = fresh_multiproc_dir(Path(configured) if configured else None)
    os.environ[MULTIPROC_ENV] = str(directory)
    command = gunicorn_command(bind=arguments.bind, workers=arguments.workers)
    os.execvp(command[0], command)


def _worker(arguments: argparse.Namespace) -> int:
    from packagerepo.metrics import MULTIPROC_ENV, fresh_multiproc_dir
    from packagerepo.stack import worker_command

    # The pool processes count in files the main process can add up; a
    # directory shared with the API (packagerepo run) is left as it is.
    if not os.environ.get(MULTIPROC_ENV):
        os.environ[MULTIPROC_ENV] = str(fresh_multiproc_dir())

    from packagerepo import keys

    queue = keys.WEBHOOK_QUEUE if arguments.webhooks else keys.EXECUTE_QUEUE
    command = worker_command(arguments.concurrency, arguments.name, (queue,))
    os.execvp(command[0], command)


def _webhook_secret(arguments: argparse.Namespace) -> int:
    from packagerepo.errors import PackageRepoError
    from packagerepo.tenants import check_tenant
    from packagerepo.webhooks import tenant_secret

    try:
        print(tenant_secret(Settings.from_env(), check_tenant(arguments.tenant)))
    except (PackageRepoError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def read_password(env_name: str) -> str | None:
    """The password from ``env_name``, else a prompt; None without a terminal
    (the caller says so, with ``no_password_message``)."""
    import getpass

    password = os.environ.get(env_name)
    if password:
        return password
    if not sys.stdin.isatty():
        return None
    try:
        return getpass.getpass()
    except (EOFError, KeyboardInterrupt):
        return None


def no_password_message(env_name: str) -> str:
    return f"No password was given: set {env_name} or run on a terminal to be asked."


def _user_add(arguments: argparse.Namespace) -> int:
    from packagerepo.accounts import Accounts
    from packagerepo.errors import PackageRepoError

    password = read_password(arguments.password_env)
    if password is None:
        print(f"error: {no_password_message(arguments.password_env)}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    scopes = [scope.strip() for scope in arguments.scopes.split(",") if scope.strip()]
    try:
        identity = Accounts(settings).add_user(
            arguments.username,
            password,
            tenant=arguments.tenant,
            scopes=scopes,
            replace=arguments.replace,
        )
    except PackageRepoError as error:
        print(f"error: {error.code}: {error.message}", file=sys.stderr)
        return 1
    print(
        f"User {identity.username} can now log in to tenant {identity.tenant} "
        f"(stored under {settings.data_dir})."
    )
    return 0


def _user_delete(arguments: argparse.Namespace) -> int:
    from packagerepo.accounts import Accounts
    from packagerepo.errors import PackageRepoError

    settings = Settings.from_env()
    try:
        Accounts(settings).delete_user(arguments.username)
    except PackageRepoError as error:
        print(f"error: {error.code}: {error.message}", file=sys.stderr)
        return 1
    print(f"User {arguments.username} was deleted (from {settings.data_dir}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
