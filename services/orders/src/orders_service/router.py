"""The /orders routes: each declares its dependencies and calls one use case."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, Depends, Path, Response, status

from order_common.http import SlashAgnosticRouter
from order_common.openapi import (
    BODY_TOO_LARGE,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    TOO_MANY_REQUESTS,
    UNAUTHORIZED,
    UNAVAILABLE,
    VALIDATION_ERROR,
    responses,
)
from order_common.orders import (
    ORDER_CREATE_EXAMPLE,
    OrderCreate,
    OrderRead,
    OrderStatusUpdate,
)
from orders_service import service
from orders_service.deps import (
    Cache,
    CurrentUser,
    IdempotencyDep,
    OrderId,
    Page,
    RateLimitedLookup,
    UoW,
    enforce_rate_limit,
)

# Every /orders route verifies the token (401; 503 while auth's keys cannot be fetched) and
# counts against the caller's rate limit (429).
_EVERY_ROUTE = (
    UNAUTHORIZED,
    TOO_MANY_REQUESTS.but(example="rate limit exceeded: 300 per 1 minute; retry in 12 s"),
    UNAVAILABLE.but(
        "The auth service's signing keys could not be fetched to verify the token, or the "
        "service is down; retry after `Retry-After` seconds.",
    ),
)
_ORDER_NOT_FOUND = NOT_FOUND.but(
    "No such order, or it belongs to someone else (the answer does not say which).",
    "order not found",
)
_BAD_ORDER_ID = {
    "detail": [
        {
            "type": "uuid_parsing",
            "loc": ["path", "order_id"],
            "msg": "Input should be a valid UUID, invalid length: expected length 32 for "
            "simple format, found 3",
            "input": "abc",
        }
    ]
}

_ORDER_EXAMPLES: dict[str, Any] = {
    "laptop-and-mice": {
        "summary": "A laptop and two mice (the README's order)",
        "value": ORDER_CREATE_EXAMPLE,
    }
}
_STATUS_EXAMPLES: dict[str, Any] = {
    "pay": {"summary": "Mark it paid (from PENDING)", "value": {"status": "PAID"}},
    "ship": {"summary": "Ship it (from PAID)", "value": {"status": "SHIPPED"}},
    "cancel": {"summary": "Cancel it (from PENDING or PAID)", "value": {"status": "CANCELED"}},
}

_STATUS_MACHINE = """\
The status moves through a fixed state machine:

| from | allowed moves |
|---|---|
| `PENDING` | `PAID`, `CANCELED` |
| `PAID` | `SHIPPED`, `CANCELED` |
| `SHIPPED` | none (final) |
| `CANCELED` | none (final) |

Setting the status the order already has is a no-op that answers 200 with the order unchanged.
Any other move answers 409, and its `detail` names the moves allowed from the current status.
Each change is announced on the event bus as `order_status_changed`."""

TAGS = [
    {
        "name": "orders",
        "description": "Place orders and move them through their status machine. Every route "
        "needs `Authorization: Bearer <token>` from `POST /token/`, and you only ever see your "
        "own orders.",
    }
]

UserId = Annotated[
    int, Path(description="Your own user id: the `id` from `POST /register/`, your token's `sub`.")
]

router = SlashAgnosticRouter(prefix="/orders", tags=["orders"])
# Every route but GET /orders/{id}/, which checks the limit with its cache read.
_RATE_LIMITED = [Depends(enforce_rate_limit)]


@router.post(
    "/",
    dependencies=_RATE_LIMITED,
    status_code=status.HTTP_201_CREATED,
    response_model=OrderRead,
    operation_id="create_order",
    summary="Place an order",
    description="Creates an order for the caller in status `PENDING`.\n\n"
    "Money is exact: each `price` and the `total_price` are decimals with at most two places, "
    'sent and returned as strings (`"451.00"`). `total_price` must equal the sum of '
    "`quantity x price` over the items (1 to 100 items), or the answer is 422.\n\n"
    "The order and its `new_order` event are stored in one transaction, so every order that "
    "is created is also announced for background processing (see `processed_at`).\n\n"
    "Send an `Idempotency-Key` header to make a retry safe (a timed-out request may or may not "
    "have created the order): the same key and body answer the same order again.",
    response_description="The new order (or, for a repeated `Idempotency-Key`, the order that "
    "key created, with `Idempotent-Replayed: true`).",
    responses=responses(
        *_EVERY_ROUTE,
        BODY_TOO_LARGE,
        VALIDATION_ERROR,
        validation_example={
            "detail": [
                {
                    "type": "value_error",
                    "loc": ["body"],
                    "msg": "Value error, total_price: 450.00 does not equal the sum of quantity "
                    "x price of the items (451.00)",
                    "input": {"items": ["..."], "total_price": "450.00"},
                }
            ]
        },
    ),
)
async def create_order(
    body: Annotated[OrderCreate, Body(openapi_examples=_ORDER_EXAMPLES)],
    user: CurrentUser,
    uow: UoW,
    cache: Cache,
    idempotency: IdempotencyDep,
) -> Response:
    created = await service.create_order(
        uow, cache, user_id=user.user_id, data=body, idempotency=idempotency
    )
    # The body the cache stored is the response (order_json): not validated or serialised again.
    return Response(
        created.body,
        status_code=status.HTTP_201_CREATED,
        headers=_REPLAYED if created.replayed else None,
        media_type="application/json",
    )


_REPLAYED = {"Idempotent-Replayed": "true"}


@router.get(
    "/user/{user_id}/",
    dependencies=_RATE_LIMITED,
    response_model=list[OrderRead],
    operation_id="list_user_orders",
    summary="List the caller's orders, newest first",
    description="`user_id` must be the caller's own id (from `POST /register/`); anyone "
    "else's answers 403.\n\n"
    "Pages hold `limit` orders (default 50, at most 200 unless the service is configured "
    'otherwise). When more follow, the `Link` header holds the next page (`rel="next"`): '
    "follow it as is; its `cursor` is opaque and stays stable while new orders arrive.",
    response_description="One page of the caller's orders, newest first.",
    responses={
        200: {
            "headers": {
                "Link": {
                    "description": "The next page, when there is one: `</orders/user/1/?"
                    'limit=50&cursor=...>; rel="next"`.',
                    "schema": {"type": "string"},
                }
            }
        },
        **responses(
            *_EVERY_ROUTE,
            FORBIDDEN.but(
                "The user id is not the caller's: you can only list your own orders.",
                "you can only list your own orders",
            ),
            VALIDATION_ERROR,
            validation_example={
                "detail": [
                    {
                        "type": "less_than_equal",
                        "loc": ["query", "limit"],
                        "msg": "Input should be less than or equal to 200",
                        "input": 500,
                    }
                ]
            },
        ),
    },
)
async def list_user_orders(
    user_id: UserId, user: CurrentUser, uow: UoW, page: Page, response: Response
) -> list[OrderRead]:
    result = await service.list_user_orders(
        uow, requester_id=user.user_id, user_id=user_id, limit=page.limit, cursor=page.cursor
    )
    if result.next_cursor is not None:
        next_url = (
            f"/orders/user/{user_id}/?limit={page.limit}&cursor={result.next_cursor.encode()}"
        )
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return result.orders


@router.get(
    "/{order_id}/",
    response_model=OrderRead,
    operation_id="get_order",
    summary="Read an order",
    description="Only the owner sees an order: someone else's answers 404, exactly like an id "
    "that does not exist. Answers come from a Redis cache (5 minutes, refreshed on every "
    "change), so reading is cheap.",
    response_description="The order.",
    responses=responses(
        *_EVERY_ROUTE, _ORDER_NOT_FOUND, VALIDATION_ERROR, validation_example=_BAD_ORDER_ID
    ),
)
async def get_order(lookup: RateLimitedLookup) -> Response:
    # The stored bytes are the response: a cache hit is never parsed or serialised again.
    body = await service.get_order(
        lookup.uow,
        lookup.cache,
        user_id=lookup.user_id,
        order_id=lookup.order_id,
        cached=lookup.cached,
    )
    return Response(body, media_type="application/json")


@router.patch(
    "/{order_id}/",
    dependencies=_RATE_LIMITED,
    response_model=OrderRead,
    operation_id="change_order_status",
    summary="Change an order's status",
    description=_STATUS_MACHINE,
    response_description="The order with its new status.",
    responses=responses(
        *_EVERY_ROUTE,
        _ORDER_NOT_FOUND,
        CONFLICT.but(
            "The state machine does not allow this move; `detail` names the allowed moves.",
            "cannot change status from SHIPPED to PAID; allowed from SHIPPED: none (it is final)",
        ),
        BODY_TOO_LARGE,
        VALIDATION_ERROR,
        validation_example={
            "detail": [
                {
                    "type": "enum",
                    "loc": ["body", "status"],
                    "msg": "Input should be 'PENDING', 'PAID', 'SHIPPED' or 'CANCELED'",
                    "input": "DELIVERED",
                    "ctx": {"expected": "'PENDING', 'PAID', 'SHIPPED' or 'CANCELED'"},
                }
            ]
        },
    ),
)
async def change_order_status(
    order_id: OrderId,
    body: Annotated[OrderStatusUpdate, Body(openapi_examples=_STATUS_EXAMPLES)],
    user: CurrentUser,
    uow: UoW,
    cache: Cache,
) -> Response:
    changed = await service.change_status(
        uow, cache, user_id=user.user_id, order_id=order_id, status=body.status
    )
    return Response(changed, media_type="application/json")
