"""Login protection: failed logins count (per account + IP, per IP, per account), successful
ones never do; the guard holds across API processes and fails open without Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import REGISTRY

from auth_service.login_guard import account_digest
from auth_service.settings import Settings

from .conftest import REDIS_URL, OpenClient, StartApp

PASSWORD = "right-password"
WRONG = "wrong-password"
CLOSED_PORT_REDIS_URL = "redis://127.0.0.1:1/0"


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def register(client: httpx.AsyncClient, email: str) -> None:
    response = await client.post("/register/", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/token/", data={"username": email, "password": password})


def assert_refused(response: httpx.Response, *, at_most: float) -> int:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= at_most
    assert "failed logins" in response.json()["detail"]
    return retry_after


async def test_twelve_users_logging_in_once_from_one_ip_within_a_minute_are_all_let_in(
    settings: Settings,
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    # The defaults: a team behind one NAT is not a brute-force attack.
    app = await start_app(settings)
    registrar = await open_client(app, ip="192.0.2.200")
    emails = [new_email() for _ in range(12)]
    for email in emails:
        await register(registrar, email)
    office = await open_client(app, ip="198.51.100.50")

    responses = [await login(office, email, PASSWORD) for email in emails]

    assert [r.status_code for r in responses] == [200] * 12


async def test_thirty_wrong_passwords_meet_a_429_well_before_the_thirtieth(
    settings: Settings,
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    app = await start_app(settings)
    client = await open_client(app, ip="198.51.100.60")
    email = new_email()
    await register(client, email)
    refused_before = metric("rate_limit_rejections_total", {"scope": "login-pair"})

    statuses = [(await login(client, email, WRONG)).status_code for _ in range(30)]

    # The default: 5 consecutive failures, then the pair waits; each refusal checks nothing.
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429] * 25
    assert metric("rate_limit_rejections_total", {"scope": "login-pair"}) - refused_before == 25
    assert_refused(await login(client, email, WRONG), at_most=30)


async def test_right_password_from_the_blocked_ip_waits_while_the_owner_elsewhere_gets_in(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    app = await start_app(make_settings(login_guard_block_seconds=1.5))
    attacker = await open_client(app, ip="198.51.100.70")
    owner = await open_client(app, ip="203.0.113.70")
    email = new_email()
    await register(owner, email)
    for _ in range(5):
        assert (await login(attacker, email, WRONG)).status_code == 401

    blocked = await login(attacker, email, PASSWORD)
    from_elsewhere = await login(owner, email, PASSWORD)

    retry_after = assert_refused(blocked, at_most=2)
    assert from_elsewhere.status_code == 200
    await asyncio.sleep(retry_after + 0.1)
    assert (await login(attacker, email, PASSWORD)).status_code == 200
    # The success reset the pair: the next failures start counting from zero again.
    assert [(await login(attacker, email, WRONG)).status_code for _ in range(5)] == [401] * 5
    assert (await login(attacker, email, WRONG)).status_code == 429


async def test_blocks_double_on_each_repeat_up_to_the_cap(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    app = await start_app(
        make_settings(
            login_guard_pair_failures=2,
            login_guard_block_seconds=1,
            login_guard_block_max_seconds=3,
        )
    )
    client = await open_client(app, ip="198.51.100.80")
    email = new_email()
    await register(client, email)

    waits = []
    for _ in range(3):
        assert [(await login(client, email, WRONG)).status_code for _ in range(2)] == [401, 401]
        response = await login(client, email, WRONG)
        assert response.status_code == 429
        waits.append(int(response.headers["retry-after"]))
        await asyncio.sleep(waits[-1] + 0.05)

    assert waits == [1, 2, 3]  # 1 s, doubled, then capped at 3 s instead of 4


async def test_one_ip_failing_across_many_accounts_is_refused_but_not_for_its_successes(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    app = await start_app(make_settings(login_guard_ip_failures=3))
    stuffer = await open_client(app, ip="198.51.100.90")
    emails = [new_email() for _ in range(6)]
    for email in emails:
        await register(await open_client(app, ip="192.0.2.201"), email)

    # Successful logins leave no trace on the IP's count...
    assert [(await login(stuffer, e, PASSWORD)).status_code for e in emails] == [200] * 6
    # ...failures do, across accounts.
    assert [(await login(stuffer, e, WRONG)).status_code for e in emails[:3]] == [401] * 3
    refused_before = metric("rate_limit_rejections_total", {"scope": "login-ip"})

    refused = await login(stuffer, emails[3], PASSWORD)

    assert_refused(refused, at_most=900)
    assert metric("rate_limit_rejections_total", {"scope": "login-ip"}) - refused_before == 1
    other_ip = await open_client(app, ip="198.51.100.91")
    assert (await login(other_ip, emails[3], PASSWORD)).status_code == 200


async def test_an_account_guessed_from_many_ips_refuses_only_those_ips_not_the_owner(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    app = await start_app(make_settings(login_guard_account_failures=3))
    email = new_email()
    owner = await open_client(app, ip="203.0.113.99")
    await register(owner, email)
    guessers = [await open_client(app, ip=f"198.51.100.{i}") for i in (101, 102, 103)]
    assert [(await login(g, email, WRONG)).status_code for g in guessers] == [401] * 3
    refused_before = metric("rate_limit_rejections_total", {"scope": "login-account"})

    again = [await login(g, email, PASSWORD) for g in guessers]
    owner_login = await login(owner, email, PASSWORD)

    for response in again:
        assert_refused(response, at_most=900)
    assert metric("rate_limit_rejections_total", {"scope": "login-account"}) - refused_before == 3
    assert owner_login.status_code == 200


async def test_a_refused_attempt_never_reaches_the_password_check(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    app = await start_app(make_settings(login_guard_pair_failures=2))
    client = await open_client(app, ip="198.51.100.110")
    email = new_email()
    await register(client, email)
    hasher = app.state.password_hasher
    verified: list[str] = []
    original = hasher.verify

    async def counting_verify(password: str, stored_hash: str | None) -> Any:
        verified.append(password)
        return await original(password, stored_hash)

    hasher.verify = counting_verify
    statuses = [(await login(client, email, WRONG)).status_code for _ in range(5)]

    assert statuses == [401, 401, 429, 429, 429]
    assert len(verified) == 2


async def test_concurrent_right_logins_of_one_account_from_one_ip_are_all_let_in(
    settings: Settings,
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    # Several tabs, an app's retries, a script: more logins at once than the pair's failure
    # limit (5), all with the right password. None is a failure, so nothing blocks.
    app = await start_app(settings)
    client = await open_client(app, ip="198.51.100.135")
    email = new_email()
    await register(client, email)

    for _ in range(3):
        responses = await asyncio.gather(*(login(client, email, PASSWORD) for _ in range(8)))
        assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    assert [(await login(client, email, WRONG)).status_code for _ in range(5)] == [401] * 5
    assert (await login(client, email, PASSWORD)).status_code == 429


async def test_parallel_guesses_cannot_outrun_the_count(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    app = await start_app(make_settings(login_guard_pair_in_flight=4))
    client = await open_client(app, ip="198.51.100.136")
    email = new_email()
    await register(client, email)

    responses = await asyncio.gather(*(login(client, email, WRONG) for _ in range(30)))

    statuses = [r.status_code for r in responses]
    # At most 4 checked at once, and the block comes after 5 failures: far fewer than 30
    # guesses were checked, and the rest were refused without a password check.
    assert 5 <= statuses.count(401) <= 4 + 5, statuses
    assert statuses.count(429) == 30 - statuses.count(401)
    in_flight = [r for r in responses if "at once" in r.text]
    assert all(r.headers["retry-after"] == "1" for r in in_flight)
    assert_refused(await login(client, email, PASSWORD), at_most=30)


async def test_a_login_that_ends_without_a_verdict_counts_for_nothing(
    settings: Settings,
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    app = await start_app(settings)
    client = await open_client(app, ip="198.51.100.137")
    email = new_email()
    await register(client, email)
    hasher = app.state.password_hasher
    original = hasher.verify
    checking = asyncio.Event()

    async def hanging_verify(password: str, stored_hash: str | None) -> Any:
        checking.set()
        await asyncio.sleep(60)
        return await original(password, stored_hash)

    hasher.verify = hanging_verify
    # Ten logins cut off mid-check (a client that went away, a worker shutting down).
    for _ in range(10):
        checking.clear()
        attempt = asyncio.create_task(login(client, email, WRONG))
        await asyncio.wait_for(checking.wait(), 10)
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await attempt
    hasher.verify = original

    sync = redis.Redis.from_url(REDIS_URL)
    try:
        prefix = f"{settings.redis_key_prefix}:login"
        digest = account_digest(email)
        assert sync.get(f"{prefix}:pair:{digest}:198.51.100.137:in-flight") is None
        assert int(sync.get(f"{prefix}:ip:198.51.100.137") or 0) == 0
        assert int(sync.get(f"{prefix}:account:{digest}") or 0) == 0
    finally:
        sync.close()
    # Nothing was counted against the pair: its five failures are still all to come.
    assert [(await login(client, email, WRONG)).status_code for _ in range(5)] == [401] * 5
    assert (await login(client, email, WRONG)).status_code == 429


async def test_an_office_logging_in_at_once_waits_a_second_at_most_and_counts_nothing(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    # More logins in flight from one IP than its failure ceiling: they could all be failures,
    # so the excess waits for a second, but none counts as one and nothing is blocked.
    app = await start_app(make_settings(login_guard_ip_failures=3))
    registrar = await open_client(app, ip="192.0.2.201")
    emails = [new_email() for _ in range(8)]
    for email in emails:
        await register(registrar, email)
    office = await open_client(app, ip="198.51.100.140")

    responses = await asyncio.gather(*(login(office, email, PASSWORD) for email in emails))

    refused = [r for r in responses if r.status_code != 200]
    assert all(r.status_code == 429 for r in refused), [r.text for r in refused]
    assert all(r.headers["retry-after"] == "1" and "at once" in r.text for r in refused)
    assert [(await login(office, email, PASSWORD)).status_code for email in emails] == [200] * 8


async def test_a_count_left_in_flight_by_a_dead_process_expires_while_others_log_in(
    settings: Settings,
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    app = await start_app(settings)
    client = await open_client(app, ip="198.51.100.141")
    email = new_email()
    await register(client, email)
    key = f"{settings.redis_key_prefix}:login:pair:{account_digest(email)}:198.51.100.141:in-flight"
    sync = redis.Redis.from_url(REDIS_URL)
    try:
        # Nine attempts of a process that died mid-login (the pair allows 10 in flight).
        sync.set(key, 9, ex=2)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert (await login(client, email, PASSWORD)).status_code == 200
            await asyncio.sleep(0.05)  # steady, well within the per-IP request ceiling
        assert sync.get(key) is None
    finally:
        sync.close()


async def test_accounts_are_kept_in_redis_only_as_a_digest_of_the_normalised_email(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    settings = make_settings(login_guard_pair_failures=2)
    app = await start_app(settings)
    client = await open_client(app, ip="198.51.100.120")
    email = new_email()
    await register(client, email)

    # One account however it is spelled: two spellings make one block.
    assert (await login(client, email.upper(), WRONG)).status_code == 401
    assert (await login(client, f"  {email.title()} ", WRONG)).status_code == 401
    assert (await login(client, email, PASSWORD)).status_code == 429

    sync = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [k.decode() for k in sync.scan_iter(match=f"{settings.redis_key_prefix}:login:*")]
    finally:
        sync.close()
    assert keys
    assert not [k for k in keys if email.split("@")[0] in k.lower()]
    assert any(account_digest(email) in k for k in keys)


async def test_without_redis_logins_are_checked_by_password_alone_and_counted(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    app = await start_app(make_settings(redis_url=CLOSED_PORT_REDIS_URL))
    client = await open_client(app, ip="198.51.100.130")
    email = new_email()
    await register(client, email)
    unavailable_before = metric("login_guard_unavailable_total")

    statuses = [(await login(client, email, WRONG)).status_code for _ in range(7)]
    right = await login(client, email, PASSWORD)

    assert statuses == [401] * 7
    assert right.status_code == 200
    # Eight admissions (seven wrong, one right) and the eight outcomes that could not be recorded.
    assert metric("login_guard_unavailable_total") - unavailable_before == 16
