"""Metrics, logs and trace-context helpers of order_common (the whole stack's traces, metrics
and logs are checked end to end in tests/observability)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client import REGISTRY

from order_common import telemetry
from order_common.health import health_router
from order_common.http import SlashAgnosticRouter, install_middleware
from order_common.http_errors import install_error_handlers
from order_common.logging import JsonFormatter, redact, request_id_var
from order_common.settings import ApiSettings

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331


@contextmanager
def in_span() -> Iterator[None]:
    context = SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1))
    with trace.use_span(NonRecordingSpan(context)):
        yield


# --- HTTP metrics ---------------------------------------------------------------------------


def app(service: str) -> FastAPI:
    application = FastAPI(redirect_slashes=False)
    router = SlashAgnosticRouter()

    @router.get("/items/{item_id}/")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    application.include_router(router)
    application.include_router(health_router(dict))
    install_error_handlers(application)
    install_middleware(application, ApiSettings(service_name=service, _env_file=None))  # type: ignore[call-arg]
    return application


def requests(service: str, route: str, status: str, method: str = "GET") -> float:
    labels = {"service": service, "method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


async def test_requests_are_counted_by_route_template_never_by_raw_path() -> None:
    service = "metrics-test-routes"
    transport = httpx.ASGITransport(app=app(service), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        for path in ("/items/1/", "/items/2", "/items/3/"):
            assert (await http.get(path)).status_code == 200
        assert (await http.get("/items/x/")).status_code == 422
        assert (await http.get("/no/such/path/123")).status_code == 404
        assert (await http.get("/boom")).status_code == 500

    assert requests(service, "/items/{item_id}/", "200") == 3  # the slash-less twin included
    assert requests(service, "/items/{item_id}/", "422") == 1
    assert requests(service, "unmatched", "404") == 1
    assert requests(service, "/boom", "500") == 1
    text = (await _metrics(service, "text/plain")).text
    assert "/items/1" not in text
    assert "/no/such/path" not in text
    count = REGISTRY.get_sample_value(
        "http_request_duration_seconds_count",
        {"service": service, "method": "GET", "route": "/items/{item_id}/"},
    )
    assert count == 4


async def _metrics(service: str, accept: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return await http.get("/metrics", headers={"Accept": accept})


async def test_metrics_speak_openmetrics_with_trace_exemplars_when_asked() -> None:
    service = "metrics-test-exemplars"
    transport = httpx.ASGITransport(app=app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with in_span():
            assert (await http.get("/items/7/")).status_code == 200

    openmetrics = await _metrics(service, "application/openmetrics-text; version=1.0.0")
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    exemplars = [
        line
        for line in openmetrics.text.splitlines()
        if line.startswith("http_request_duration_seconds_bucket")
        and service in line
        and "#" in line
    ]
    assert any(f'trace_id="{TRACE_ID:032x}"' in line for line in exemplars)
    assert openmetrics.text.rstrip().endswith("# EOF")

    plain = await _metrics(service, "text/plain")
    assert plain.headers["content-type"].startswith("text/plain")
    assert "trace_id" not in plain.text  # the classic format has no exemplars


# --- logs -----------------------------------------------------------------------------------


def log_line(message: str, *args: object, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("test", logging.INFO, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    line: dict[str, object] = json.loads(JsonFormatter("svc").format(record))
    return line


def test_a_log_line_names_service_trace_span_and_request() -> None:
    token = request_id_var.set("req-1")
    try:
        with in_span():
            line = log_line("hello %s", "world")
    finally:
        request_id_var.reset(token)
    assert line["message"] == "hello world"
    assert line["service"] == "svc"
    assert line["level"] == "INFO"
    assert "timestamp" in line
    assert line["trace_id"] == f"{TRACE_ID:032x}"
    assert line["span_id"] == f"{SPAN_ID:016x}"
    assert line["request_id"] == "req-1"


def test_uvicorns_colour_copy_of_the_message_is_dropped() -> None:
    line = log_line("started", color_message="\x1b[32mstarted\x1b[0m")
    assert "color_message" not in line


def test_secrets_never_reach_a_log_line() -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    line = log_line(
        "login password=%s with %s via amqp://guest:guest@rabbit:5672/",
        "hunter2",
        f"Bearer {jwt}",
        password="hunter2",
        access_token=jwt,
        error="IntegrityError [parameters: ('a@b.c', "
        "'$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA')]",
    )
    text = json.dumps(line)
    for secret in ("hunter2", jwt, "guest:guest", "$argon2id"):
        assert secret not in text
    assert line["password"] == "[REDACTED]"
    assert line["access_token"] == "[REDACTED]"
    assert "amqp://guest:[REDACTED]@rabbit" in str(line["message"])


def test_a_private_key_in_a_traceback_is_masked() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----"
    assert "MIIEvQIBADANBg" not in redact(f"ValueError: bad key {pem}")


def test_plain_words_are_left_alone() -> None:
    for text in ("token issued", "user registered", "order_processed applied", "passed 3"):
        assert redact(text) == text


# --- trace context --------------------------------------------------------------------------


def test_the_trace_context_goes_into_headers_and_comes_back() -> None:
    with in_span():
        headers = telemetry.inject_headers({"x-attempts": 1})
    assert headers["traceparent"] == f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"
    carried = telemetry.extract_context({"traceparent": headers["traceparent"].encode()})
    assert telemetry.trace_ids(carried) == (f"{TRACE_ID:032x}", f"{SPAN_ID:016x}")
    assert telemetry.has_trace_context(headers)
    assert not telemetry.has_trace_context({})
    assert telemetry.inject_headers() == {}  # no span: nothing to carry


def _configured(env: dict[str, str]) -> dict[str, object]:
    """What setup_telemetry installs in a fresh process with ``env``."""
    script = textwrap.dedent(
        """
        import json
        from opentelemetry import trace
        from order_common.telemetry import setup_telemetry

        setup_telemetry("fallback-name")
        provider = trace.get_tracer_provider()
        active = getattr(provider, "_active_span_processor", None)
        exporters = [
            type(getattr(processor, "_batch_processor", processor)._exporter).__module__
            for processor in getattr(active, "_span_processors", ())
        ]
        resource = getattr(provider, "resource", None)
        service = resource.attributes.get("service.name") if resource else None
        sampler = getattr(provider, "sampler", None)
        with trace.get_tracer("t").start_as_current_span("request") as span:
            with trace.get_tracer("t").start_as_current_span("query") as child:
                ids = [format(s.get_span_context().trace_id, "032x") for s in (span, child)]
                recording = span.is_recording()
        print(json.dumps({"provider": type(provider).__name__, "service": service,
                          "exporters": exporters, "recording": recording,
                          "sampler": sampler.get_description() if sampler else None,
                          "trace_ids": ids}))
        """
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    answer: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


@pytest.mark.parametrize(
    ("env", "service", "exporter"),
    [
        ({}, "fallback-name", None),
        ({"OTEL_SERVICE_NAME": "from-env"}, "from-env", None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "fallback-name", "http"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            },
            "fallback-name",
            "grpc",
        ),
    ],
)
def test_tracing_is_configured_by_the_standard_otel_variables_only(
    env: dict[str, str], service: str, exporter: str | None
) -> None:
    configured = _configured(env)
    assert configured["provider"] == "TracerProvider"
    assert configured["service"] == service
    exporters = configured["exporters"]
    assert isinstance(exporters, list)
    if exporter is None:
        assert exporters == []
    else:
        assert len(exporters) == 1
        assert f"proto.{exporter}" in exporters[0]


def test_without_an_exporter_spans_are_not_recorded_but_keep_their_ids() -> None:
    configured = _configured({})
    assert configured["recording"] is False
    assert configured["sampler"] == "AlwaysOffSampler"
    parent, child = configured["trace_ids"]  # type: ignore[misc]
    assert parent == child
    assert parent != "0" * 32  # a real trace id, for the logs and the messages


@pytest.mark.parametrize(
    ("env", "sampler", "recording"),
    [
        ({}, "ParentBased{root:TraceIdRatioBased{1.0}", True),
        ({"OTEL_TRACES_SAMPLER_ARG": "0.25"}, "ParentBased{root:TraceIdRatioBased{0.25}", None),
        ({"OTEL_TRACES_SAMPLER_ARG": "0"}, "ParentBased{root:TraceIdRatioBased{0.0}", False),
        ({"OTEL_TRACES_SAMPLER": "always_off"}, "AlwaysOffSampler", False),
    ],
)
def test_an_exporting_process_samples_by_parent_and_ratio(
    env: dict[str, str], sampler: str, recording: bool | None
) -> None:
    configured = _configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", **env})
    assert str(configured["sampler"]).startswith(sampler)
    if recording is not None:
        assert configured["recording"] is recording


def test_otel_sdk_disabled_leaves_tracing_off() -> None:
    configured = _configured({"OTEL_SDK_DISABLED": "true"})
    assert configured["provider"] != "TracerProvider"


def test_the_log_output_of_a_real_logger_is_one_json_object_per_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("svc"))
    logger = logging.getLogger("order_common.tests.lines")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("one")
        try:
            raise ValueError("password=swordfish")
        except ValueError:
            logger.exception("two")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["one", "two"]
    assert "swordfish" not in lines[1]["exc_info"]


def _served(env: dict[str, str]) -> dict[str, object]:
    """Requests to an app built the way the services build theirs, in a fresh process that ran
    setup_telemetry with ``env``: what the handler saw of its span, with and without a caller's
    traceparent, and what was installed."""
    script = textwrap.dedent(
        """
        import asyncio, json
        import httpx
        from fastapi import FastAPI
        from opentelemetry import trace
        from order_common import telemetry
        from order_common.cache import build_redis
        from order_common.http import NATIVE_TELEMETRY_OFF, install_middleware
        from order_common.http_errors import install_error_handlers
        from order_common.settings import ApiSettings

        telemetry.setup_telemetry("served")
        app = FastAPI(**NATIVE_TELEMETRY_OFF)

        @app.get("/span")
        async def span() -> dict:
            current = trace.get_current_span()
            ids = telemetry.current_trace_ids()
            return {"recording": current.is_recording(), "trace_id": ids[0] if ids else None,
                    "span_id": ids[1] if ids else None}

        install_error_handlers(app)
        install_middleware(app, ApiSettings(_env_file=None))
        redis = build_redis("redis://127.0.0.1:1/0", 0.1)

        async def main():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                fresh = (await client.get("/span")).json()
                again = (await client.get("/span")).json()
                parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                continued = (await client.get("/span", headers={"traceparent": parent})).json()
            middleware, node = [], app.build_middleware_stack()
            while node is not None and len(middleware) < 40:
                middleware.append(type(node).__name__)
                node = getattr(node, "app", None)
            print(json.dumps({"fresh": fresh, "again": again, "continued": continued,
                              "middleware": middleware,
                              "redis_traced": hasattr(redis, "_is_instrumented_by_opentelemetry")
                              and bool(redis._is_instrumented_by_opentelemetry)}))

        asyncio.run(main())
        """
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    answer: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def test_without_an_exporter_a_request_builds_no_span_but_keeps_trace_ids() -> None:
    served = _served({})
    fresh, again, continued = (served[k] for k in ("fresh", "again", "continued"))
    assert isinstance(fresh, dict)
    assert isinstance(again, dict)
    assert isinstance(continued, dict)

    assert "TraceIdMiddleware" in served["middleware"]  # type: ignore[operator]
    assert "OpenTelemetryMiddleware" not in served["middleware"]  # type: ignore[operator]
    assert served["redis_traced"] is False
    assert fresh["recording"] is False
    assert fresh["trace_id"] not in (None, "0" * 32)
    assert fresh["trace_id"] != again["trace_id"]  # each request its own trace
    # A caller's trace is continued: the logs and the outbox row carry its id.
    assert continued["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert continued["span_id"] != "b7ad6b7169203331"


def test_with_an_exporter_requests_are_traced_by_the_opentelemetry_middleware() -> None:
    served = _served({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    fresh, continued = served["fresh"], served["continued"]
    assert isinstance(fresh, dict)
    assert isinstance(continued, dict)

    assert "OpenTelemetryMiddleware" in served["middleware"]  # type: ignore[operator]
    assert "TraceIdMiddleware" not in served["middleware"]  # type: ignore[operator]
    assert served["redis_traced"] is True
    assert fresh["recording"] is True
    assert continued["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_an_outage_warning_is_said_once_a_while_with_how_many_were_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from order_common.logging import Throttle

    now = [0.0]
    throttle = Throttle(every=10.0, clock=lambda: now[0])
    logger = logging.getLogger("order_common.tests.throttle")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        for _ in range(100):
            throttle.warning(logger, "cache unavailable: %s", "refused")
        throttle.warning(logger, "another message")
        now[0] = 10.5
        throttle.warning(logger, "cache unavailable: %s", "refused")
    records = [(r.getMessage(), getattr(r, "suppressed", 0)) for r in caplog.records]
    assert records == [
        ("cache unavailable: refused", 0),
        ("another message", 0),
        ("cache unavailable: refused", 99),
    ]


def test_an_exemplar_names_only_a_sampled_trace() -> None:
    sampled = SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1))
    unsampled = SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(0))
    with trace.use_span(NonRecordingSpan(sampled)):
        assert telemetry.exemplar() == {"trace_id": f"{TRACE_ID:032x}"}
    with trace.use_span(NonRecordingSpan(unsampled)):
        assert telemetry.exemplar() is None
        assert telemetry.current_trace_ids() is not None  # the logs keep the id
    assert telemetry.exemplar() is None
