"""Render gateway/nginx.conf.template for a local nginx, the way the nginx image's entrypoint does:
only ${NAME} forms whose NAME is given are substituted."""

from __future__ import annotations

import argparse
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "gateway" / "nginx.conf.template"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def render(values: dict[str, str]) -> str:
    text = TEMPLATE.read_text()

    def substitute(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}", substitute, text)


def docs_assets_dir() -> str:
    """Swagger UI and ReDoc as the `docs` dependency group installs them into the venv (this
    script runs on the system Python, so it asks the venv's)."""
    if os.environ.get("GATEWAY_DOCS_ASSETS_DIR"):
        return os.environ["GATEWAY_DOCS_ASSETS_DIR"]
    found = subprocess.run(
        [
            str(VENV_PYTHON),
            "-c",
            "import fastapi_offline, pathlib; "
            "print(pathlib.Path(fastapi_offline.__file__).parent / 'static')",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        print("gateway: the API docs assets are missing (run `make install`)", file=sys.stderr)
        return str(ROOT / ".venv" / "missing-docs-assets")
    return found.stdout.strip()


def readable_by_others(path: Path) -> bool:
    """Whether nginx's unprivileged workers (`nobody`) can read files under ``path``."""
    path = path.resolve()
    for directory in (path, *path.parents):
        try:
            if not directory.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prefix", required=True, help="nginx prefix directory (temp files, pid)")
    parser.add_argument("--port", default=os.environ.get("GATEWAY_PORT", "8000"))
    parser.add_argument("--auth", default=os.environ.get("AUTH_UPSTREAM", "127.0.0.1:8001"))
    parser.add_argument("--orders", default=os.environ.get("ORDERS_UPSTREAM", "127.0.0.1:8002"))
    parser.add_argument(
        "--docs", default=os.environ.get("GATEWAY_DOCS_DIR", str(ROOT / "docs")), help="docs/"
    )
    parser.add_argument("--docs-assets", default=None, help="Swagger UI and ReDoc assets")
    args = parser.parse_args()
    prefix = Path(args.prefix).resolve()
    prefix.mkdir(parents=True, exist_ok=True)
    docs = Path(args.docs).resolve()
    assets = Path(args.docs_assets or docs_assets_dir()).resolve()
    config = render(
        {
            "GATEWAY_PREFIX": str(prefix),
            "GATEWAY_PORT": str(args.port),
            "AUTH_UPSTREAM": args.auth,
            "ORDERS_UPSTREAM": args.orders,
            "GATEWAY_DOCS_DIR": str(docs),
            "GATEWAY_DOCS_ASSETS_DIR": str(assets),
        }
    )
    # Started by root, nginx runs its workers as `nobody`, which cannot read a checkout under
    # a private directory (/root/...): then, and only locally, let them read as root.
    if os.geteuid() == 0 and not all(readable_by_others(d) for d in (docs, assets)):
        config = "user root;\n" + config
    (prefix / "nginx.conf").write_text(config)
    print(prefix / "nginx.conf")


if __name__ == "__main__":
    main()
