from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.otlp import OtlpReceiver, otlp_receiver
from tests.stack import Stack, running_stack


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    """Where the stack's processes send their spans (tests/observability reads them)."""
    with otlp_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, otlp: OtlpReceiver) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack"), extra_env=otlp.env()) as running:
        yield running
