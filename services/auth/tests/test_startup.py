from __future__ import annotations

import asyncio
import secrets
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from auth_service.cli import main
from auth_service.keys import SigningKeyError, load_signing_key
from auth_service.main import create_app
from auth_service.settings import Settings
from order_common.dbadmin import drop_database

from .conftest import POSTGRES_SERVER


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


async def test_startup_refuses_a_missing_key_file_naming_it_and_the_fix(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    missing = tmp_path / "nope" / "jwt-private.pem"
    app = create_app(make_settings(jwt_private_key_path=missing))

    with pytest.raises(SigningKeyError, match="does not exist") as excinfo:
        async with app.router.lifespan_context(app):
            pass

    assert str(missing) in str(excinfo.value)
    assert "generate-dev-key" in str(excinfo.value)


def test_serve_refuses_to_start_without_a_key_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "jwt-private.pem"
    monkeypatch.setenv("AUTH_JWT_PRIVATE_KEY_PATH", str(missing))

    assert main(["serve", "--port", "1"]) == 2

    error = capsys.readouterr().err
    assert str(missing) in error
    assert "generate-dev-key" in error


def test_an_unreadable_key_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="cannot be read"):
        load_signing_key(tmp_path)  # a directory: reading it fails even as root


def test_a_file_that_is_not_a_pem_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("not a key")

    with pytest.raises(SigningKeyError, match="not an unencrypted PEM private key"):
        load_signing_key(path)


def test_a_non_rsa_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))

    with pytest.raises(SigningKeyError, match="must be an RSA key"):
        load_signing_key(path)


def test_an_rsa_key_under_2048_bits_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))  # noqa: S505

    with pytest.raises(SigningKeyError, match="at least 2048"):
        load_signing_key(path)


def test_settings_refuse_an_unparseable_rate_limit() -> None:
    with pytest.raises(ValidationError, match="rate_limit_token_ip"):
        Settings(_env_file=None, rate_limit_token_ip="lots")


def test_generate_dev_key_creates_an_owner_only_rsa_key_and_never_overwrites(
    tmp_path: Path,
) -> None:
    path = tmp_path / ".dev" / "jwt-private.pem"

    assert main(["generate-dev-key", str(path), "--bits", "2048"]) == 0
    first = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_signing_key(path).private_key.key_size == 2048

    assert main(["generate-dev-key", str(path), "--bits", "2048"]) == 0
    assert path.read_bytes() == first


def test_generate_dev_key_defaults_to_the_configured_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "configured.pem"
    monkeypatch.setenv("AUTH_JWT_PRIVATE_KEY_PATH", str(path))

    main(["generate-dev-key", "--bits", "2048"])

    assert path.exists()


def test_migrate_creates_the_database_and_the_users_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"auth_test_{secrets.token_hex(6)}"
    url = f"{POSTGRES_SERVER}/{name}"
    monkeypatch.setenv("AUTH_DATABASE_URL", url)

    async def users_table() -> str | None:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}")
        try:
            table: str | None = await conn.fetchval("SELECT to_regclass('public.users')::text")
            return table
        finally:
            await conn.close()

    # The command runs its own event loop: give it a thread of its own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            assert pool.submit(main, ["migrate"]).result() == 0
            assert pool.submit(asyncio.run, users_table()).result() == "users"
        finally:
            pool.submit(asyncio.run, drop_database(url)).result()
