"""Key rotation in auth: a directory of keys, the newest (once activated) signs, all are
published, retired keys are removed by `rotate-key` only once no live token needs them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest

from auth_service.cli import main
from auth_service.keys import (
    KeyRing,
    SigningKeyError,
    StoredKey,
    key_file_name,
    load_key_ring,
    load_signing_key,
    retired_keys,
    rotate,
    write_new_private_key,
)
from auth_service.settings import Settings

from .conftest import OpenClient, StartApp

HOUR = 3600.0


def _ring(directory: Path, *created: float) -> list[StoredKey]:
    for at in created:
        assert write_new_private_key(directory / key_file_name(at), bits=2048)
    return load_key_ring(directory)


def test_keys_are_ordered_by_the_time_in_their_names(tmp_path: Path) -> None:
    keys = _ring(tmp_path, 3 * HOUR, 1 * HOUR, 2 * HOUR)

    assert [k.created_at for k in keys] == [1 * HOUR, 2 * HOUR, 3 * HOUR]
    assert len({k.key.kid for k in keys}) == 3


def test_only_keys_retired_longer_than_the_token_lifetime_are_removable(tmp_path: Path) -> None:
    keys = _ring(tmp_path, 0, 10 * HOUR, 20 * HOUR)
    now = 20 * HOUR + 100  # the newest key has signed for 100 s

    def removable(keep: float) -> list[float]:
        found = retired_keys(keys, now=now, activation_seconds=0, keep_seconds=keep)
        return [k.created_at for k in found]

    # The first key retired 10 h + 100 s ago, the second 100 s ago.
    assert removable(keep=1000) == [0]
    assert removable(keep=50) == [0, 10 * HOUR]
    # Not yet active (activation 200 s): the second key still signs; nothing newer retired it.
    assert [
        k.created_at for k in retired_keys(keys, now=now, activation_seconds=200, keep_seconds=50)
    ] == [0]


def test_rotate_adds_a_key_and_removes_the_retired_ones(tmp_path: Path) -> None:
    now = time.time()
    _ring(tmp_path, now - 10 * HOUR, now - 5 * HOUR)

    new, removed = rotate(tmp_path, bits=2048, activation_seconds=30, keep_seconds=900, now=now)

    assert [k.created_at for k in removed] == [int(now - 10 * HOUR)]
    remaining = load_key_ring(tmp_path)
    assert [k.key.kid for k in remaining][-1] == new.key.kid
    assert len(remaining) == 2  # the key that signs until the new one is active stays


def test_rotation_refuses_a_single_key_file(tmp_path: Path) -> None:
    path = tmp_path / "jwt-private.pem"
    write_new_private_key(path, bits=2048)

    with pytest.raises(SigningKeyError, match="key directory"):
        rotate(path, bits=2048, activation_seconds=0, keep_seconds=0)
    assert main(["rotate-key", str(path), "--bits", "2048"]) == 2


def test_an_empty_key_directory_is_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="rotate-key"):
        load_key_ring(tmp_path)


def test_generate_dev_key_starts_a_key_ring_in_a_directory(tmp_path: Path) -> None:
    ring = tmp_path / "jwt-keys"

    assert main(["generate-dev-key", str(ring), "--bits", "2048"]) == 0
    assert main(["generate-dev-key", str(ring), "--bits", "2048"]) == 0

    files = list(ring.iterdir())
    assert len(files) == 1
    assert files[0].stat().st_mode & 0o777 == 0o600
    assert len(load_key_ring(ring)) == 1


async def test_the_key_ring_signs_with_the_newest_active_key_and_rereads_the_directory(
    tmp_path: Path,
) -> None:
    now = time.time()
    _ring(tmp_path, now - HOUR)
    ring = KeyRing(tmp_path, activation_seconds=60, reload_seconds=0)
    ring.load_sync()
    first = await ring.signing_key()

    write_new_private_key(tmp_path / key_file_name(now), bits=2048)  # not yet active
    published = await ring.published()
    assert await ring.signing_key() == first
    assert len(published) == 2

    ready = KeyRing(tmp_path, activation_seconds=0, reload_seconds=0)
    ready.load_sync()
    assert (await ready.signing_key()).kid == published[-1].kid


async def test_a_bad_file_during_a_reload_keeps_the_keys_in_use(tmp_path: Path) -> None:
    _ring(tmp_path, time.time() - HOUR)
    ring = KeyRing(tmp_path, reload_seconds=0)
    ring.load_sync()
    kid = (await ring.signing_key()).kid

    (tmp_path / key_file_name(time.time())).write_text("not a key")

    assert (await ring.signing_key()).kid == kid


async def test_tokens_of_every_published_key_verify_and_new_ones_carry_the_new_kid(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    assert main(["generate-dev-key", str(keys), "--bits", "2048"]) == 0
    app = await start_app(
        make_settings(
            jwt_private_key_path=keys, jwt_key_activation_seconds=0, jwt_keys_reload_seconds=0
        )
    )
    client = await open_client(app)
    email = new_email()
    assert (
        await client.post("/register/", json={"email": email, "password": "secret1"})
    ).status_code == 201

    async def token() -> str:
        response = await client.post("/token/", data={"username": email, "password": "secret1"})
        assert response.status_code == 200
        access_token: str = response.json()["access_token"]
        return access_token

    old = await token()
    await asyncio.sleep(1.1)  # key files are named by the second
    assert main(["rotate-key", str(keys), "--bits", "2048"]) == 0
    new = await token()
    jwks = (await client.get("/.well-known/jwks.json")).json()

    old_kid, new_kid = (jwt.get_unverified_header(t)["kid"] for t in (old, new))
    assert old_kid != new_kid
    assert [k["kid"] for k in jwks["keys"]] == [old_kid, new_kid]
    for access_token, kid in ((old, old_kid), (new, new_kid)):
        jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
        key = jwt.PyJWK(jwk, algorithm="RS256").key
        jwt.decode(access_token, key, algorithms=["RS256"], audience="order-platform")


def test_load_signing_key_still_reads_one_file(private_key_path: Path) -> None:
    # The single-file form (compose, Helm) keeps working: a ring of one.
    ring = load_key_ring(private_key_path)
    assert [k.key.kid for k in ring] == [load_signing_key(private_key_path).kid]
