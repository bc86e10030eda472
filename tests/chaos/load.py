"""The chaos tests' load: a steady stream of orders through the gateway, and the count of what
became of each one.

``OrderStream`` sends ``rate`` orders a second (each from its own thread, so a slow answer
never slows the stream), round robin over the test's users, each with its own
``Idempotency-Key`` and an item name ``chaos-{case}-{run}-{n}`` that finds the order in the database
whatever the client was told. Per request it records when it was sent and answered and the
outcome: the status with the body's ``detail`` and ``Retry-After``, or how the request got no
answer (``refused``: nothing listened; ``cut``: the connection broke or timed out after the
request was sent).

``count`` then waits for the pipeline to drain and reads, per order the database holds:
processed (``processed_at`` set), lost (committed, or answered 2xx, and never processed), and
processed twice. The worker's effect is its outcome record, reported on the bus as an
``order_processed`` event under the outcome's own event id (``order_worker.tasks``); a second
run of the processing step would make a second outcome with a new event id. A spy queue bound
to ``order_processed`` keeps every report, and an order with more than one distinct report
event id was processed twice (the same id delivered again is the same outcome: that is the
at-least-once delivery every consumer de-duplicates)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg
import httpx

from order_common.events import EventType
from tests.stack import Stack, bus_topology

SPY_QUEUE = "chaos.spy.order_processed"
REQUEST_TIMEOUT = 30.0  # longer than any bound of the platform's: a timeout here is a hang


@dataclass
class Attempt:
    n: int
    sent: float
    answered: float | None = None
    status: int | None = None
    detail: str = ""
    retry_after: str | None = None
    no_answer: str | None = None  # "refused" or "cut"
    order_id: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def kind(self) -> str:
        """How a failure reads in the table: ``503 the database is unavailable…``."""
        if self.no_answer:
            return f"no answer ({self.no_answer})"
        return f"{self.status} {self.detail}".strip()


@dataclass
class OrderStream:
    stack: Stack
    tokens: list[str]
    case: str
    rate: float = 10.0
    attempts: list[Attempt] = field(default_factory=list)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])  # this run of the case
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def prefix(self) -> str:
        return f"chaos-{self.case}-{self.tag}-"

    def item_name(self, n: int) -> str:
        return f"{self.prefix}{n}"

    def _send(self, client: httpx.Client, attempt: Attempt) -> None:
        token = self.tokens[attempt.n % len(self.tokens)]
        body = {
            "items": [{"name": self.item_name(attempt.n), "quantity": 1, "price": "1.00"}],
            "total_price": "1.00",
        }
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
        try:
            response = client.post("/orders/", json=body, headers=headers)
        except httpx.ConnectError:
            attempt.no_answer = "refused"
        except httpx.HTTPError:  # read/write error, remote closed, timeout
            attempt.no_answer = "cut"
        else:
            attempt.status = response.status_code
            attempt.retry_after = response.headers.get("retry-after")
            try:
                data = response.json()
            except ValueError:
                data = {"detail": response.text[:80]}
            if attempt.accepted:
                attempt.order_id = data.get("id")
            else:
                detail = data.get("detail") if isinstance(data, dict) else None
                attempt.detail = detail if isinstance(detail, str) else json.dumps(detail)[:80]
        attempt.answered = time.monotonic()

    def _run(self) -> None:
        # One client per thread of the pool: httpx clients are not shared across threads here.
        local = threading.local()

        def send(attempt: Attempt) -> None:
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=self.stack.base_url, timeout=REQUEST_TIMEOUT)
            self._send(local.client, attempt)

        interval = 1.0 / self.rate
        with ThreadPoolExecutor(max_workers=64, thread_name_prefix="chaos-load") as pool:
            start = time.monotonic()
            n = 0
            while not self._stop.is_set():
                attempt = Attempt(n=n, sent=time.monotonic())
                self.attempts.append(attempt)
                pool.submit(send, attempt)
                n += 1
                self._stop.wait(max(0.0, start + n * interval - time.monotonic()))

    @contextmanager
    def running(self) -> Iterator[OrderStream]:
        thread = threading.Thread(target=self._run, name=f"chaos-stream-{self.case}")
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()  # the pool waits for every request in flight


@dataclass
class Tally:
    case: str
    sent: int
    accepted: int
    failures: dict[str, int]
    committed: int
    processed: int
    lost: int
    doubled: int
    recovery_s: float | None  # None: never recovered
    drained_s: float | None
    committed_unanswered: int  # committed although the client was not told 2xx
    restarted: dict[str, int] = field(default_factory=dict)  # by the supervisor, during the case
    notes: list[str] = field(default_factory=list)  # e.g. the ids of lost orders

    @property
    def five_xx(self) -> dict[str, int]:
        return {kind: count for kind, count in self.failures.items() if kind.startswith("5")}

    def as_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "sent": self.sent,
            "accepted": self.accepted,
            "lost": self.lost,
            "doubled": self.doubled,
            "failures": self.failures,
            "committed": self.committed,
            "committed_without_2xx": self.committed_unanswered,
            "processed": self.processed,
            "recovery_s": self.recovery_s,
            "restarted": self.restarted,
            "drained_s": self.drained_s,
            "notes": self.notes,
        }


def recovery_time(attempts: list[Attempt], fault_end: float) -> float | None:
    """From the fault's end to the answer of the first successful request sent after it and
    after the last failed one: when the API was back for good. A request already in flight at
    the fault's end says nothing about recovery. 0 when no request failed."""
    failed = [a.sent for a in attempts if not a.accepted]
    if not failed:
        return 0.0
    since = max(fault_end, max(failed))
    answered = [a.answered for a in attempts if a.accepted and a.answered and a.sent > since]
    return round(min(answered) - fault_end, 2) if answered else None


async def _orders_of_case(dsn: str, prefix: str) -> dict[str, tuple[str, bool]]:
    """item name -> (order id, processed) for every order of the case in the database."""
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT id::text AS id, items->0->>'name' AS name, processed_at IS NOT NULL AS done "
            "FROM orders WHERE items->0->>'name' LIKE $1",
            f"{prefix}%",
        )
    finally:
        await connection.close()
    return {row["name"]: (row["id"], row["done"]) for row in rows}


def orders_of_case(dsn: str, prefix: str) -> dict[str, tuple[str, bool]]:
    return asyncio.run(_orders_of_case(dsn, prefix))


class ReportSpy:
    """Every ``order_processed`` the stack publishes, kept in a durable queue of its own on the
    private RabbitMQ (read directly, not through the proxy)."""

    def __init__(self, stack: Stack, amqp_url: str) -> None:
        self.topology = bus_topology(stack.env)
        self.amqp_url = amqp_url
        self.reports: dict[str, set[str]] = defaultdict(set)  # order id -> report event ids
        self.deliveries: Counter[str] = Counter()  # order id -> deliveries of any report
        asyncio.run(self._declare())

    async def _declare(self) -> None:
        connection = await aio_pika.connect(self.amqp_url)
        try:
            channel = await connection.channel()
            exchange = await channel.get_exchange(self.topology.exchange, ensure=True)
            queue = await channel.declare_queue(SPY_QUEUE, durable=True)
            await queue.bind(exchange, routing_key=EventType.ORDER_PROCESSED.value)
        finally:
            await connection.close()

    async def _collect(self) -> None:
        connection = await aio_pika.connect(self.amqp_url)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(SPY_QUEUE, durable=True)
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                event = json.loads(message.body)
                order_id = str(event["data"]["order_id"])
                self.reports[order_id].add(str(event["event_id"]))
                self.deliveries[order_id] += 1
        finally:
            await connection.close()

    def collect(self) -> None:
        asyncio.run(self._collect())


def count(
    stream: OrderStream,
    *,
    dsn: str,
    spy: ReportSpy,
    fault_end: float,
    drain_timeout: float,
    restarted: dict[str, int],
) -> Tally:
    """Wait until every order of the case that the database holds is processed (or
    ``drain_timeout`` passed), then count."""
    attempts = stream.attempts
    deadline = time.monotonic() + drain_timeout
    while True:
        orders = orders_of_case(dsn, stream.prefix)
        if all(done for _, done in orders.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    drained = (
        round(time.monotonic() - fault_end, 1)
        if orders and all(done for _, done in orders.values())
        else None
    )
    time.sleep(0.5)  # a report confirmed just now reaches the spy's queue as well
    spy.collect()

    accepted_ids = {a.order_id for a in attempts if a.accepted and a.order_id}
    by_id = {order_id: done for order_id, done in orders.values()}
    answered_2xx = {stream.item_name(a.n) for a in attempts if a.accepted}
    unprocessed = [order_id for order_id, done in by_id.items() if not done]
    missing = sorted(accepted_ids - by_id.keys())
    lost = len(unprocessed) + len(missing)
    notes = [f"not processed: {order_id}" for order_id in unprocessed]
    notes += [f"answered 2xx, not in the database: {order_id}" for order_id in missing]
    doubled = sum(1 for order_id in by_id if len(spy.reports.get(order_id, ())) > 1)
    failures = Counter(a.kind() for a in attempts if not a.accepted)
    return Tally(
        case=stream.case,
        sent=len(attempts),
        accepted=sum(1 for a in attempts if a.accepted),
        failures=dict(failures.most_common()),
        committed=len(by_id),
        processed=sum(1 for done in by_id.values() if done),
        lost=lost,
        doubled=doubled,
        recovery_s=recovery_time(attempts, fault_end),
        drained_s=drained,
        committed_unanswered=len(set(orders) - answered_2xx),
        restarted=restarted,
        notes=notes,
    )
