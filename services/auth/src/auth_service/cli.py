"""`auth-service serve | migrate | generate-dev-key`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from auth_service.keys import (
    DEV_KEY_BITS,
    SigningKeyError,
    load_signing_key,
    write_new_private_key,
)
from auth_service.settings import Settings


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from order_common.serve import serve

    # The lifespan checks the key too, but its refusal would come wrapped in a traceback.
    try:
        load_signing_key(settings.jwt_private_key_path)
    except SigningKeyError as exc:
        print(f"auth-service: {exc}", file=sys.stderr)
        return 2
    serve(
        "auth_service.main:serve_app",
        settings,
        host=args.host,
        port=args.port,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    return 0


def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    from order_common.migrations import upgrade

    upgrade("auth_service:migrations", settings.database_url)
    return 0


def _generate_dev_key(settings: Settings, args: argparse.Namespace) -> int:
    path: Path = args.path or settings.jwt_private_key_path
    if write_new_private_key(path, bits=args.bits):
        print(f"created RSA-{args.bits} private key {path} (mode 0600)")
    else:
        print(f"{path} exists; left unchanged")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auth-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API under uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8001)
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser("migrate", help="create the database if needed and migrate it")
    migrate.set_defaults(handler=_migrate)

    key = commands.add_parser(
        "generate-dev-key", help="create the RSA signing key if it does not exist"
    )
    key.add_argument(
        "path",
        nargs="?",
        type=Path,
        help="default: AUTH_JWT_PRIVATE_KEY_PATH (.dev/jwt-private.pem)",
    )
    key.add_argument("--bits", type=int, choices=(2048, 3072, 4096), default=DEV_KEY_BITS)
    key.set_defaults(handler=_generate_dev_key)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = args.handler
    status: int = handler(Settings(), args)
    return status


if __name__ == "__main__":
    sys.exit(main())
