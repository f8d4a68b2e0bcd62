"""Structured logs (presence.runtime.logs): JSON lines, correlation ids, per-service levels."""

from __future__ import annotations

import io
import json
import logging

import pytest

from presence.runtime import logs, metrics
from presence.settings import SettingsError, load


class Captured(io.StringIO):
    def configure(self, service: str, level: str, **options: str) -> None:
        logs.configure(service, level, stream=self, **options)


@pytest.fixture
def captured():
    stream = Captured()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield stream
    root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    for name in ("aiokafka", "presence_store.xcap"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_json_lines_carry_the_correlation_id(captured: Captured) -> None:
    captured.configure("notifier", "INFO", fmt="json")
    log = logging.getLogger("notifier.fanout")
    log.info("outside")
    with logs.correlated("abc123"):
        log.info("inside %s", "a transaction")
        log.debug("not shown at INFO")
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["outside", "inside a transaction"]
    assert "correlation_id" not in lines[0]
    assert lines[1]["correlation_id"] == "abc123"
    assert lines[1]["service"] == "notifier" and lines[1]["level"] == "INFO"
    assert lines[1]["logger"] == "notifier.fanout" and lines[1]["ts"].endswith("Z")


def test_exceptions_are_one_json_line(captured: Captured) -> None:
    captured.configure("sip-edge", "INFO", fmt="json")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")
    (line,) = captured.getvalue().splitlines()
    assert "ValueError: boom" in json.loads(line)["exc"]


def test_text_on_a_terminal(captured: Captured) -> None:
    captured.configure("sip-edge", "INFO", fmt="text")
    with logs.correlated("c0ffee"):
        logging.getLogger("sip_edge.edge").info("PUBLISH sip:a@b -> 200 OK")
    assert (
        captured.getvalue()
        .rstrip()
        .endswith("sip-edge INFO sip_edge.edge [c0ffee]: PUBLISH sip:a@b -> 200 OK")
    )


def test_auto_is_json_when_not_a_terminal(captured: Captured) -> None:
    captured.configure("sip-edge", "INFO", fmt="auto")
    logging.getLogger("y").warning("w")
    assert json.loads(captured.getvalue())["msg"] == "w"


def test_levels_per_service_and_logger(captured: Captured) -> None:
    shared = "notifier=DEBUG,presence-store=WARNING,presence_store.xcap=ERROR"
    captured.configure("presence-store", "INFO", fmt="json", levels=shared)
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger("presence_store.xcap").level == logging.ERROR
    captured.configure("notifier", "INFO", fmt="json", levels=shared)
    assert logging.getLogger().level == logging.DEBUG
    assert logging.getLogger("aiokafka").level == logging.WARNING  # never chattier


def test_bad_levels_name_the_variable() -> None:
    with pytest.raises(SettingsError, match="PRESENCE_LOG_LEVELS"):
        load({"PRESENCE_LOG_LEVELS": "notifier=LOUD"})
    with pytest.raises(SettingsError, match="PRESENCE_LOG_FORMAT"):
        load({"PRESENCE_LOG_FORMAT": "xml"})
    assert logs.parse_levels(" sip-edge=debug , aiokafka=INFO") == {
        "sip-edge": "DEBUG",
        "aiokafka": "INFO",
    }


def test_kafka_headers_carry_the_current_id() -> None:
    assert logs.kafka_headers() == []
    with logs.correlated("id-1"):
        headers = logs.kafka_headers()
        with logs.correlated(None):  # keeps the current one
            assert logs.kafka_headers() == headers
    assert headers == [("correlation-id", b"id-1")]
    assert logs.from_kafka_headers([("other", b"x"), *headers]) == "id-1"
    assert logs.from_kafka_headers(None) == ""
    assert logs.new_correlation_id("admin").startswith("admin-")


def test_method_labels_are_bounded() -> None:
    assert metrics.method_label("PUBLISH") == "PUBLISH"
    assert metrics.method_label("XYZZY") == "other"
