from __future__ import annotations

import gc
import uuid
import weakref
from datetime import UTC, datetime

import order_testing as testing
import pytest
from pydantic import ValidationError

from order_common.events import (
    EventType,
    NewOrder,
    OrderProcessed,
    envelope,
    json_schemas,
    parse_envelope,
)


def new_order() -> NewOrder:
    return testing.new_order(user_id=7)


def test_an_envelope_round_trips_through_json() -> None:
    sent = envelope(EventType.NEW_ORDER, new_order())
    received = parse_envelope(sent.model_dump_json())
    assert received == sent
    assert isinstance(received.data, NewOrder)
    assert sent.model_dump(mode="json")["data"]["total_price"] == "400.00"


def test_the_envelope_class_of_an_event_type_is_built_once() -> None:
    # pydantic's cache of parametrized generics is weak: without a strong reference the class
    # was collected between events and its schema generated again for the next one.
    built = weakref.ref(type(envelope(EventType.NEW_ORDER, new_order())))
    gc.collect()
    assert built() is not None
    assert type(envelope(EventType.NEW_ORDER, new_order())) is built()


def test_an_envelope_refuses_a_payload_of_another_type() -> None:
    with pytest.raises(TypeError):
        envelope(EventType.ORDER_PROCESSED, new_order())


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"{}",
        b'{"event_type": "new_order", "data": {}}',
        b'{"event_type": "no_such_event", "data": {}}',
    ],
)
def test_malformed_messages_fail_validation(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        parse_envelope(raw)


def test_the_payload_is_validated_against_its_event_type() -> None:
    processed = envelope(
        EventType.ORDER_PROCESSED,
        OrderProcessed(order_id=uuid.uuid4(), processed_at=datetime.now(UTC)),
    ).model_dump(mode="json")
    processed["event_type"] = "new_order"
    with pytest.raises(ValidationError):
        parse_envelope(__import__("json").dumps(processed))


def test_every_event_type_has_a_json_schema() -> None:
    schemas = json_schemas()
    assert set(schemas) == {event.value for event in EventType}
    for schema in schemas.values():
        assert {"event_id", "event_type", "data"} <= set(schema["properties"])
