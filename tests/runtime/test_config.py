import pytest

from services.runtime.config import Settings
from services.runtime.errors import ConfigError


def test_defaults_name_every_service() -> None:
    s = Settings.from_env({})
    assert s.nats_url == "" and s.database_url == ""
    assert s.endpoint("journal").grpc_addr == "127.0.0.1:7401"
    assert s.endpoint("orders").schema == "orders"
    assert s.certs_dir == s.data_dir / "certs"


def test_environment_overrides() -> None:
    s = Settings.from_env(
        {"SCF_NATS_URL": "nats://h:1", "SCF_ORDERS_ADDR": "127.0.0.1:9", "SCF_ORDERS_SCHEMA": "o2"}
    )
    assert s.nats_url == "nats://h:1"
    assert s.endpoint("orders").grpc_addr == "127.0.0.1:9"
    assert s.endpoint("orders").schema == "o2"
    assert Settings.from_env(s.to_env()) == s


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"SCF_ORDERS_ADDR": "nohost"}, "SCF_ORDERS_ADDR"),
        ({"SCF_JOURNAL_ADDR": "127.0.0.1:99999"}, "SCF_JOURNAL_ADDR"),
        ({"SCF_LENDING_SCHEMA": "bad;drop"}, "SCF_LENDING_SCHEMA"),
        ({"SCF_NATS_PREFIX": "a.b"}, "SCF_NATS_PREFIX"),
        ({"SCF_MODE": "chaos"}, "SCF_MODE"),
        ({"SCF_LOG_FORMAT": "xml"}, "SCF_LOG_FORMAT"),
        ({"SCF_LOG_LEVEL": "loud"}, "SCF_LOG_LEVEL"),
    ],
)
def test_bad_setting_is_named(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.setting == setting
    assert str(info.value).startswith(setting)


def test_unknown_service_is_refused() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({}).endpoint("payments")


def test_the_log_level_is_a_setting_and_lines_carry_their_extra_fields() -> None:
    import json
    import logging

    from services.runtime.logs import JsonFormatter

    assert Settings.from_env({}).log_level == "info"
    settings = Settings.from_env({"SCF_LOG_LEVEL": "DEBUG"})
    assert settings.log_level == "debug" and settings.to_env()["SCF_LOG_LEVEL"] == "debug"
    record = logging.getLogger("scf.test").makeRecord(
        "scf.test", logging.WARNING, __file__, 1, "relay stalled", (), None,
        extra={"outbox_id": 7},
    )  # fmt: skip
    line = json.loads(JsonFormatter("orders").format(record))
    assert line["outbox_id"] == 7 and line["msg"] == "relay stalled" and "rpc" not in line
