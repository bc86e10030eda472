"""Every service's one Settings class, made of order_common's parts, keeps the configuration
they share: a `.env` file is read, unknown variables are ignored, rejected values stay out of
error messages. (A part with pydantic's defaults listed after the others used to replace it.)"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

SERVICES = {
    "AUTH_": "auth_service.settings",
    "ORDERS_": "orders_service.settings",
    "CONSUMER_": "event_consumer.settings",
    "WORKER_": "order_worker.settings",
}


@pytest.mark.parametrize(("prefix", "module"), SERVICES.items())
def test_each_service_reads_its_env_file_and_ignores_what_is_not_its_own(
    prefix: str, module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_class = importlib.import_module(module).Settings
    config = settings_class.model_config
    assert config["env_prefix"] == prefix
    assert config["hide_input_in_errors"] is True
    (tmp_path / ".env").write_text(f"{prefix}LOG_LEVEL=DEBUG\nSOMEONE_ELSES_SETTING=1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(f"{prefix}LOG_LEVEL", raising=False)
    assert settings_class().log_level == "DEBUG"
