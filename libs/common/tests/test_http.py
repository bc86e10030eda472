from __future__ import annotations

import httpx
from fastapi import FastAPI

from order_common.errors import Conflict
from order_common.http import SlashAgnosticRouter, install_middleware
from order_common.http_errors import install_error_handlers
from order_common.settings import ApiSettings


def app() -> FastAPI:
    application = FastAPI(redirect_slashes=False)
    router = SlashAgnosticRouter()

    @router.get("/things/")
    async def things() -> list[str]:
        return ["a"]

    @router.post("/conflict")
    async def conflict() -> None:
        raise Conflict("already there")

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    application.include_router(router)
    install_error_handlers(application)
    install_middleware(application, ApiSettings(_env_file=None))  # type: ignore[call-arg]
    return application


def client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_paths_answer_with_and_without_the_slash_without_redirect() -> None:
    async with client() as http:
        for path in ("/things/", "/things"):
            response = await http.get(path)
            assert response.status_code == 200
            assert response.json() == ["a"]
        assert (await http.post("/conflict/")).status_code == 409


def test_only_the_declared_form_is_documented() -> None:
    assert set(app().openapi()["paths"]) == {"/things/", "/conflict", "/boom"}


async def test_domain_errors_keep_the_detail_shape() -> None:
    async with client() as http:
        response = await http.post("/conflict")
    assert response.json() == {"detail": "already there"}


async def test_an_unhandled_error_hides_its_traceback() -> None:
    async with client() as http:
        response = await http.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}


async def test_an_unhandled_error_is_answered_not_re_raised_to_the_server() -> None:
    """Re-raised after the answer, uvicorn would close the kept-alive connection under it."""
    transport = httpx.ASGITransport(app=app())  # raises what the app lets escape
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/boom", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert response.headers["X-Request-ID"] == "boom-1"  # the middleware outside still applies


async def test_request_id_is_echoed_or_made() -> None:
    async with client() as http:
        echoed = await http.get("/things", headers={"X-Request-ID": "abc-123"})
        made = await http.get("/things")
    assert echoed.headers["X-Request-ID"] == "abc-123"
    assert len(made.headers["X-Request-ID"]) == 32


async def test_cors_allows_only_the_configured_origin() -> None:
    async with client() as http:
        allowed = await http.get("/things", headers={"Origin": "http://localhost:3000"})
        denied = await http.get("/things", headers={"Origin": "http://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "access-control-allow-origin" not in denied.headers


def test_wildcard_origin_with_credentials_is_refused() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="credentials"):
        ApiSettings(_env_file=None, cors_allow_origins="*")  # type: ignore[call-arg]
