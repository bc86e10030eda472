"""Install each service alone, as its image does (``uv sync --no-dev --package X``), and import
every module of it: an import its role does not declare fails here, not in production.

Also prints what each role installs, and refuses a package a role must not carry (the worker
and the consumer have no web framework and no database driver)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# member -> (its Python package, distributions it must not install)
ROLES = {
    "order-common": ("order_common", {"fastapi", "sqlalchemy", "asyncpg", "aio-pika", "celery"}),
    "auth-service": ("auth_service", {"aio-pika", "celery"}),
    "orders-service": ("orders_service", {"celery"}),
    "event-consumer": ("event_consumer", {"fastapi", "sqlalchemy", "asyncpg", "alembic"}),
    "order-worker": ("order_worker", {"fastapi", "sqlalchemy", "asyncpg", "alembic", "httpx"}),
}
# Modules of order_common that need an extra, by extra: importable only where it is installed.
EXTRA_MODULES = {
    "db": {"db", "dbadmin", "migrations"},
    "http": {
        "api",
        "http",
        "http_errors",
        "http_metrics",
        "http_tracing",
        "health",
        "jwt",
        "ratelimit",
        "serve",
        "body_limit",
    },
    "bus": {"bus", "subscriber", "handling", "delivery", "redelivery", "dlq"},
}
# What each member imports of order_common (its extras).
MEMBER_EXTRAS = {
    "order-common": set(),
    "auth-service": {"db", "http"},
    "orders-service": {"db", "http", "bus"},
    "event-consumer": {"bus"},
    "order-worker": {"bus"},
}

IMPORT_ALL = """
import importlib, pkgutil, sys
skip = set(sys.argv[2].split(",")) if sys.argv[2] else set()
names = [sys.argv[1]]
package = importlib.import_module(sys.argv[1])
names += [m.name for m in pkgutil.walk_packages(package.__path__, sys.argv[1] + ".")]
common = importlib.import_module("order_common")
names += [m.name for m in pkgutil.iter_modules(common.__path__, "order_common.")
          if m.name.split(".")[-1] not in skip]
def wanted(name):
    parts = name.split(".")
    if parts[0] == "order_common" and len(parts) > 1 and parts[1] in skip:
        return False
    return "migrations" not in parts[1:-1]  # alembic's env.py runs only under alembic
names = sorted({name for name in names if wanted(name)})
for name in names:
    importlib.import_module(name)
print(len(names), "modules imported")
"""


UV = os.environ.get("UV", "uv").split()


def _environment(member: str) -> Path:
    return ROOT / ".run" / "roles" / member


def check(member: str) -> list[str]:
    package, forbidden = ROLES[member]
    venv = _environment(member)
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    subprocess.run(
        [*UV, "sync", "--frozen", "--quiet", "--no-dev", "--package", member],
        cwd=ROOT,
        env=env,
        check=True,
    )
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [*UV, "pip", "list", "--python", str(python), "--format=freeze"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    names = sorted(line.split("==")[0].lower() for line in installed if "==" in line)
    problems = [f"{member} installs {name}" for name in names if name in forbidden]
    skip = set().union(
        *(m for extra, m in EXTRA_MODULES.items() if extra not in MEMBER_EXTRAS[member])
    )
    result = subprocess.run(
        [str(python), "-c", IMPORT_ALL, package, ",".join(sorted(skip))],
        cwd="/",  # not the checkout: only what is installed may be imported
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        problems.append(f"{member}: {result.stderr.strip().splitlines()[-1]}")
    print(f"{member}: {len(names)} distributions; {result.stdout.strip()}")
    print("  " + " ".join(names))
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("members", nargs="*", default=list(ROLES))
    args = parser.parse_args()
    problems = [problem for member in args.members for problem in check(member)]
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
