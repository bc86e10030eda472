"""The first connection of a process: retried with the repo's one back-off until RabbitMQ
answers, and given up only when the process is told to stop."""

from __future__ import annotations

import asyncio
import contextlib

from order_testing import AMQP_URL, free_port

from order_common.aio import CONNECT_RETRY, RetryPolicy, connect_with_retry
from order_common.bus import connect_retrying


def test_back_off_doubles_from_half_a_second_up_to_its_cap() -> None:
    assert [CONNECT_RETRY.delay(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 15, 15]
    assert RetryPolicy(base_delay=1.0, max_delay=5.0).delay(0) == 1.0


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


async def test_a_process_started_before_rabbitmq_connects_once_it_answers() -> None:
    port = free_port()  # nothing listens there yet: connections are refused

    async def link(client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        broker_in, broker_out = await asyncio.open_connection("127.0.0.1", 5672)
        await asyncio.gather(_forward(client_in, broker_out), _forward(broker_in, client_out))

    stop = asyncio.Event()
    connecting = asyncio.create_task(
        connect_retrying(f"amqp://guest:guest@127.0.0.1:{port}/", name="test-aio", stop=stop)
    )
    await asyncio.sleep(1.2)  # a few refused attempts
    assert not connecting.done()
    server = await asyncio.start_server(link, "127.0.0.1", port)
    try:
        connection = await asyncio.wait_for(connecting, timeout=10)
        assert connection is not None
        channel = await connection.channel()
        await channel.close()
        await connection.close()
    finally:
        server.close()


async def test_stopping_ends_the_retries_without_a_connection() -> None:
    stop = asyncio.Event()
    attempts = 0

    async def refused() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionRefusedError("nobody there")

    waiting = asyncio.create_task(connect_with_retry(refused, what="nothing", stop=stop))
    await asyncio.sleep(0.8)
    stop.set()
    assert await asyncio.wait_for(waiting, timeout=2) is None
    assert attempts >= 2


async def test_the_first_success_is_returned() -> None:
    stop = asyncio.Event()
    connection = await connect_retrying(AMQP_URL, name="test-aio", stop=stop)
    assert connection is not None
    await connection.close()
