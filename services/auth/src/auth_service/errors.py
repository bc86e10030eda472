from __future__ import annotations

from order_common.errors import Conflict, Unauthorized


class EmailAlreadyRegistered(Conflict):
    def __init__(self) -> None:
        super().__init__("a user with this email is already registered")


class InvalidCredentials(Unauthorized):
    # One message for an unknown user and a wrong password: the answer reveals neither.
    def __init__(self) -> None:
        super().__init__("incorrect username or password")
