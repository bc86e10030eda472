"""Text PostgreSQL can store: no NUL character, no unpaired surrogate.

JSON allows both (``"\\u0000"``, ``"\\ud800"``) and Python decodes them, but PostgreSQL refuses
NUL in text and JSONB and nothing can encode a lone surrogate as UTF-8. Rejecting them at the
schema gives the client a 422 that names the field, instead of a failure deep in the driver."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: str) -> str:
    if _UNSTORABLE.search(value):
        raise ValueError("must not contain NUL characters (\\u0000) or unpaired surrogates")
    return value


StorableText = Annotated[str, AfterValidator(_storable)]
