"""One trace follows an order from the POST to the worker and back: the stack's processes
export their spans to a local OTLP receiver (tests/otlp.py) and the test reads the trace."""

from __future__ import annotations

import secrets
import time

import httpx
import pytest

from tests.observability.support import User
from tests.otlp import OtlpReceiver, ReceivedSpan
from tests.stack import Stack

pytestmark = pytest.mark.e2e

ORDER = {
    "items": [{"name": "Lamp", "quantity": 2, "price": "12.50"}],
    "total_price": "25.00",
}


def _find(spans: list[ReceivedSpan], service: str, predicate: object) -> ReceivedSpan | None:
    for span in spans:
        if span.service == service and predicate(span):  # type: ignore[operator]
            return span
    return None


def _statement(span: ReceivedSpan) -> str:
    return str(span.attributes.get("db.statement") or span.attributes.get("db.query.text") or "")


class Trace:
    def __init__(self, spans: list[ReceivedSpan]) -> None:
        self.spans = spans
        self.by_id = {span.span_id: span for span in spans}

    def ancestors(self, span: ReceivedSpan) -> list[ReceivedSpan]:
        chain = []
        while span.parent_span_id in self.by_id:
            span = self.by_id[span.parent_span_id]
            chain.append(span)
        return chain

    def descends(self, span: ReceivedSpan, ancestor: ReceivedSpan) -> bool:
        return ancestor in self.ancestors(span)


def _hops(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan | None]:
    def name(expected: str) -> object:
        return lambda span: span.name == expected

    return {
        "http request": _find(spans, "orders", lambda s: s.kind == "SERVER"),
        "order insert": _find(spans, "orders", lambda s: "INSERT INTO orders" in _statement(s)),
        "outbox insert": _find(
            spans, "orders", lambda s: "INSERT INTO outbox_events" in _statement(s)
        ),
        "relay publish": _find(spans, "orders-events", name("new_order publish")),
        "consumer": _find(spans, "event-consumer", name("new_order process")),
        "task send": _find(spans, "event-consumer", name("order_worker.process_order send")),
        "celery task": _find(spans, "worker", name("run/order_worker.process_order")),
        "worker publish": _find(spans, "worker", name("order_processed publish")),
        "order_processed": _find(spans, "orders-events", name("order_processed process")),
        "processed update": _find(
            spans, "orders-events", lambda s: _statement(s).startswith("UPDATE orders")
        ),
    }


def test_one_trace_follows_an_order_from_the_post_to_the_worker_and_back(
    stack: Stack, otlp: OtlpReceiver, user: User
) -> None:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        auth = user.auth
        created = client.post(
            "/orders/",
            json=ORDER,
            headers={**auth, "traceparent": f"00-{trace_id}-{caller_span}-01"},
        )
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]
        deadline = time.monotonic() + 20
        while client.get(f"/orders/{order_id}/", headers=auth).json()["processed_at"] is None:
            assert time.monotonic() < deadline, f"not processed:\n{stack.logs()[-3000:]}"
            time.sleep(0.1)

    spans = otlp.wait_for(trace_id, lambda spans: all(_hops(spans).values()))
    hops = _hops(spans)
    missing = [hop for hop, span in hops.items() if span is None]
    assert not missing, f"no span for {missing}; got {sorted((s.service, s.name) for s in spans)}"

    found = Trace(spans)
    request = hops["http request"]
    assert request is not None
    assert request.parent_span_id == caller_span
    # Each hop continues the one before it: one chain of parent links from the POST to the
    # worker and back into the orders database.
    chain = list(hops.values())
    for child, parent in [
        ("order insert", "http request"),
        ("outbox insert", "http request"),
        ("relay publish", "http request"),
        ("consumer", "relay publish"),
        ("task send", "consumer"),
        ("celery task", "task send"),
        ("worker publish", "celery task"),
        ("order_processed", "worker publish"),
        ("processed update", "order_processed"),
    ]:
        child_span, parent_span = hops[child], hops[parent]
        assert child_span is not None
        assert parent_span is not None
        assert found.descends(child_span, parent_span), f"{child} is not under {parent}"
    assert len({span.trace_id for span in chain if span is not None}) == 1
    # No span of the trace points at a parent that was never exported.
    orphans = [
        (span.service, span.name)
        for span in spans
        if span.parent_span_id not in found.by_id and span is not request
    ]
    assert not orphans, f"spans whose parent is missing: {orphans}"
