"""An order's trip through the event pipeline, as `make run` runs it: orders writes the outbox,
the relay publishes `new_order`, the event consumer hands it to Celery, the worker processes it
and reports `order_processed`, and orders sets `processed_at`."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import httpx
import pytest

from tests.stack import Stack

pytestmark = pytest.mark.e2e

ORDER = {
    "items": [{"name": "Laptop", "quantity": 1, "price": "400.00"}],
    "total_price": "400.00",
}


def _token(client: httpx.Client) -> str:
    email = f"pipeline-{uuid.uuid4().hex[:8]}@example.com"
    registered = client.post("/register/", json={"email": email, "password": "pipeline-pass"})
    assert registered.status_code == 201, registered.text
    issued = client.post("/token/", data={"username": email, "password": "pipeline-pass"})
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    return token


def test_a_new_order_is_processed_and_shows_processed_at(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        auth = {"Authorization": f"Bearer {_token(client)}"}
        created = client.post("/orders/", json=ORDER, headers=auth)
        assert created.status_code == 201, created.text
        order = created.json()
        assert order["processed_at"] is None

        deadline = time.monotonic() + 20
        while True:
            fetched = client.get(f"/orders/{order['id']}/", headers=auth).json()
            if fetched["processed_at"] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)

    assert fetched["processed_at"] is not None, f"not processed in time:\n{stack.logs()[-4000:]}"
    processed_at = datetime.fromisoformat(fetched["processed_at"])
    assert processed_at >= datetime.fromisoformat(order["created_at"])
    assert fetched["status"] == "PENDING"  # processing is not a status change

    expected = (f"new_order received order_id={order['id']}", f"Order {order['id']} processed")
    deadline = time.monotonic() + 5  # the log file may trail the database by a moment
    while not all(line in stack.logs() for line in expected) and time.monotonic() < deadline:
        time.sleep(0.1)
    logs = stack.logs()
    for line in expected:
        assert line in logs, f"{line!r} missing from the stack log"
