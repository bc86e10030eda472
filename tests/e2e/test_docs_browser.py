"""A person's first visit, in a real browser: open the gateway's /docs, find both services'
operations on one page, log in through **Authorize** (the OAuth2 password flow), place the
README's example order with *Try it out* and read the 201 in the page. Nothing may load from
outside the gateway. Screenshots land in .run/artifacts/ for a person to look at.

Uses Debian's chromium (scripts/ensure_chromium.sh installs it), never a downloaded build."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.stack import ROOT, Stack

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / ".run" / "artifacts"
# ReDoc's "API docs by Redocly" badge points at a CDN image and removes itself when it cannot
# load (as offline, or here, where the request is refused): the one outside request we allow.
TOLERATED_OUTSIDE = {"https://cdn.redoc.ly/redoc/logo-mini.svg"}
OPERATIONS = [
    "operations-auth-register",
    "operations-auth-token",
    "operations-auth-jwks",
    "operations-orders-create_order",
    "operations-orders-list_user_orders",
    "operations-orders-get_order",
    "operations-orders-change_order_status",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ensured = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ensure_chromium.sh")], capture_output=True, text=True
    )
    if ensured.returncode != 0 or not Path(CHROMIUM).exists():
        pytest.fail(f"chromium is not available:\n{ensured.stdout}{ensured.stderr}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    """A fresh profile that refuses (and records) every request not addressed to the gateway."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside: list[str] = []

    def only_the_gateway(route: Route) -> None:
        url = route.request.url
        if url.startswith((stack.base_url, "data:", "blob:")):
            route.continue_()
        else:
            if url not in TOLERATED_OUTSIDE:
                outside.append(url)
            route.abort()

    context.route("**/*", only_the_gateway)
    page = context.new_page()
    yield page
    context.close()
    assert not outside, f"the page asked for resources outside the gateway: {outside}"


@pytest.fixture
def account(stack: Stack) -> dict[str, str | int]:
    email = f"docs-{uuid.uuid4().hex[:10]}@example.com"
    password = "correct-horse"
    response = httpx.post(
        f"{stack.base_url}/register/", json={"email": email, "password": password}, timeout=10
    )
    assert response.status_code == 201, response.text
    return {"email": email, "password": password, "id": response.json()["id"]}


def _screenshot(page: Page, name: str, *, full_page: bool = False) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    return path


def test_docs_page_logs_in_and_places_an_order(
    page: Page, stack: Stack, account: dict[str, str | int]
) -> None:
    page.goto(f"{stack.base_url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Order Platform API")
    for operation in OPERATIONS:
        expect(page.locator(f"#{operation}")).to_be_visible()
    _screenshot(page, "docs-swagger-ui.png")

    # Authorize with the password flow: the page calls POST /token/ itself.
    page.locator(".swagger-ui .auth-wrapper .btn.authorize").click()
    dialog = page.locator(".swagger-ui .dialog-ux .modal-ux")
    oauth = dialog.locator(".auth-container").filter(has_text="OAuth2PasswordBearer")
    oauth.locator("#oauth_username").fill(str(account["email"]))
    oauth.locator("#oauth_password").fill(str(account["password"]))
    oauth.locator("button.authorize").click()
    # Success says "Authorized" and offers Logout; a failure says "Auth Error".
    expect(oauth.get_by_role("heading", name="Authorized")).to_be_visible()
    expect(oauth.get_by_role("button", name="Remove authorization")).to_have_text("Logout")
    expect(oauth).not_to_contain_text("Auth Error")
    _screenshot(page, "docs-authorized.png")
    dialog.get_by_role("button", name="Close").first.click()
    expect(dialog).to_be_hidden()
    expect(page.locator(".swagger-ui .auth-wrapper .btn.authorize.locked")).to_be_visible()

    # POST /orders/ with the README's example order, as the page prefills it.
    create = page.locator("#operations-orders-create_order")
    create.locator(".opblock-summary").click()
    create.locator("button.try-out__btn").click()
    body = create.locator("textarea.body-param__text")
    assert json.loads(body.input_value())["total_price"] == "451.00"
    create.locator("button.execute").click()

    live = create.locator(".live-responses-table")
    expect(live.locator("tr.response .response-col_status")).to_have_text("201")
    response_body = live.locator("tr.response .response-col_description pre").first
    answer = json.loads(response_body.inner_text())
    assert answer["status"] == "PENDING"
    assert answer["total_price"] == "451.00"
    assert answer["user_id"] == account["id"]
    expect(create.locator(".curl-command")).to_contain_text("Authorization: Bearer ")
    _screenshot(page, "docs-swagger-ui-full.png", full_page=True)
    live.locator("tr.response").evaluate("row => row.scrollIntoView({block: 'start'})")
    _screenshot(page, "docs-swagger-ui-201.png")

    # The order really is the account's: read it back through the API.
    token = httpx.post(
        f"{stack.base_url}/token/",
        data={"username": account["email"], "password": account["password"]},
        timeout=10,
    ).json()["access_token"]
    listed = httpx.get(
        f"{stack.base_url}/orders/user/{account['id']}/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    assert [order["id"] for order in listed] == [answer["id"]]


def test_redoc_renders_the_same_document(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.base_url}/redoc")
    expect(page.locator("h1").first).to_contain_text("Order Platform API")
    for operation in ("Register a user", "Place an order", "Change an order's status"):
        expect(page.get_by_role("heading", name=operation)).to_be_visible()
    expect(page.locator("img[alt='redocly logo']")).to_have_count(0)
    _screenshot(page, "docs-redoc.png")
