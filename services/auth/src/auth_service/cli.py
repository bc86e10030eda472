"""`auth-service serve | migrate | generate-dev-key | rotate-key`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from auth_service.keys import (
    DEV_KEY_BITS,
    KEY_SUFFIX,
    SigningKeyError,
    key_file_name,
    load_key_ring,
    rotate,
    write_new_private_key,
)
from auth_service.settings import Settings


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from order_common.serve import serve

    # The lifespan checks the key too, but its refusal would come wrapped in a traceback.
    try:
        load_key_ring(settings.jwt_private_key_path)
    except SigningKeyError as exc:
        print(f"auth-service: {exc}", file=sys.stderr)
        return 2
    serve(
        "auth_service.main:serve_app",
        settings,
        host=args.host,
        port=args.port,
    )
    return 0


def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    from order_common.migrations import upgrade

    upgrade(
        "auth_service:migrations",
        settings.database_url.get_secret_value(),
        create_database=settings.migrate_create_database,
    )
    return 0


def _generate_dev_key(settings: Settings, args: argparse.Namespace) -> int:
    path: Path = args.path or settings.jwt_private_key_path
    if path.is_dir() or path.suffix != KEY_SUFFIX:  # a key ring: its first key
        if path.is_dir() and any(p.suffix == KEY_SUFFIX for p in path.iterdir()):
            print(f"{path} holds keys; left unchanged")
            return 0
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = path / key_file_name(time.time())
    if write_new_private_key(path, bits=args.bits):
        print(f"created RSA-{args.bits} private key {path} (mode 0600)")
    else:
        print(f"{path} exists; left unchanged")
    return 0


def _rotate_key(settings: Settings, args: argparse.Namespace) -> int:
    directory: Path = args.path or settings.jwt_private_key_path
    # A removed key's tokens must all have expired: their lifetime, the verifiers' leeway and
    # the time every replica needs to read the directory again.
    keep = settings.access_token_ttl_seconds + settings.jwt_keys_reload_seconds + 60
    try:
        new, removed = rotate(
            directory,
            bits=args.bits,
            activation_seconds=settings.jwt_key_activation_seconds,
            keep_seconds=keep,
            prune=not args.keep_all,
        )
    except SigningKeyError as exc:
        print(f"auth-service: {exc}", file=sys.stderr)
        return 2
    print(
        f"created {new.path} (kid {new.key.kid}); published at the next key reload, signing "
        f"after {settings.jwt_key_activation_seconds:g} s"
    )
    for old in removed:
        print(f"removed {old.path} (kid {old.key.kid}): retired more than {keep} s ago")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auth-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API under uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8001)
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser(
        "migrate",
        help="migrate the database (creating it first unless *_MIGRATE_CREATE_DATABASE=false)",
    )
    migrate.set_defaults(handler=_migrate)

    key = commands.add_parser(
        "generate-dev-key", help="create the RSA signing key if it does not exist"
    )
    key.add_argument(
        "path",
        nargs="?",
        type=Path,
        help="a PEM file, or a directory to start a key ring in; default: "
        "AUTH_JWT_PRIVATE_KEY_PATH (.dev/jwt-keys)",
    )
    key.add_argument("--bits", type=int, choices=(2048, 3072, 4096), default=DEV_KEY_BITS)
    key.set_defaults(handler=_generate_dev_key)

    rotate_key = commands.add_parser(
        "rotate-key",
        help="add a new signing key to the key directory and remove the keys no live token needs",
    )
    rotate_key.add_argument(
        "path", nargs="?", type=Path, help="default: AUTH_JWT_PRIVATE_KEY_PATH (a directory)"
    )
    rotate_key.add_argument("--bits", type=int, choices=(2048, 3072, 4096), default=DEV_KEY_BITS)
    rotate_key.add_argument(
        "--keep-all", action="store_true", help="remove no key, however long retired"
    )
    rotate_key.set_defaults(handler=_rotate_key)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = args.handler
    status: int = handler(Settings(), args)
    return status


if __name__ == "__main__":
    sys.exit(main())
