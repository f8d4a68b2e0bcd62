"""Metrics and logs on the real stack: /metrics of every service moves with real SIP
traffic, and one correlation id follows a PUBLISH through all three services' logs."""

from __future__ import annotations

import json
import secrets
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Stack, wait_until
from .sip_client import SipClient
from .test_subscribe import WatcherDialog

pytestmark = pytest.mark.integration

SERVICES = ("sip-edge", "presence-store", "notifier")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(stack: Stack, service: str) -> Samples:
    with urllib.request.urlopen(stack.http(service, "/metrics"), timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def publish(stack: Stack, presentity: str, note: str) -> None:
    client = SipClient(stack.sip, "udp")
    body = (
        f'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
        f'entity="{presentity}"><tuple id="t1"><status><basic>open</basic></status>'
        f"<note>{note}</note></tuple></presence>"
    ).encode()
    headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml")]
    try:
        response = client.transact(client.request("PUBLISH", presentity, headers, body))
        assert response.status == 200
    finally:
        client.close()


def watch(stack: Stack, presentity: str) -> WatcherDialog:
    dialog = WatcherDialog(
        SipClient(stack.sip, "udp"), presentity, secrets.token_hex(8), secrets.token_hex(4)
    )
    assert dialog.subscribe().status == 200
    dialog.next_notify()  # the subscription's first NOTIFY, answered 200
    return dialog


def test_metrics_move_with_sip_traffic(stack: Stack) -> None:
    before = {service: scrape(stack, service) for service in SERVICES}
    presentity = f"sip:metrics-{secrets.token_hex(4)}@example.com"
    dialog = watch(stack, presentity)
    try:
        publish(stack, presentity, "at work")
        dialog.next_notify()
        client = SipClient(stack.sip, "udp")
        try:
            options = client.request("OPTIONS", "sip:127.0.0.1", [])
            assert client.transact(options).status == 200
        finally:
            client.close()

        def grew(service: str, name: str, by: float = 1, **labels: str) -> bool:
            now = scrape(stack, service)
            return value(now, name, **labels) >= value(before[service], name, **labels) + by

        edge_expectations = [
            ("presence_sip_requests_total", 1, {"method": "PUBLISH", "code": "200"}),
            ("presence_sip_requests_total", 1, {"method": "SUBSCRIBE", "code": "200"}),
            ("presence_sip_requests_total", 1, {"method": "OPTIONS", "code": "200"}),
            ("presence_sip_transaction_duration_seconds_count", 1, {"method": "PUBLISH"}),
            ("presence_sip_notifies_sent_total", 2, {"event": "presence"}),
            (
                "presence_sip_notify_outcomes_total",
                2,
                {"event": "presence", "outcome": "delivered"},
            ),
            ("presence_publish_to_notify_seconds_count", 1, {"event": "presence"}),
        ]
        expectations = [("sip-edge", *expected) for expected in edge_expectations]
        expectations += [
            ("presence-store", *expected)
            for expected in [
                ("presence_store_requests_total", 1, {"type": "publish", "code": "200"}),
                ("presence_store_requests_total", 1, {"type": "subscribe", "code": "200"}),
                ("presence_lock_wait_seconds_count", 2, {"outcome": "acquired"}),
                ("presence_bus_events_handled_total", 1, {"type": "publish"}),
                # The NOTIFY the SUBSCRIBE calls for is built by the store itself.
                ("presence_store_notifies_total", 1, {"event": "presence"}),
            ]
        ]
        expectations += [
            ("notifier", *expected)
            for expected in [
                ("presence_notifier_notifies_total", 1, {"event": "presence"}),
                ("presence_bus_events_handled_total", 1, {"type": "presentity_changed"}),
            ]
        ]
        for service, name, by, labels in expectations:
            wait_until(
                lambda s=service, n=name, b=by, lb=labels: grew(s, n, b, **lb),
                10,
                f"{service}: {name} {labels} to grow by {by}",
            )

        # Gauges read from the database (refreshed at most every 5 s).
        def tables_counted() -> bool:
            now = scrape(stack, "presence-store")
            return (
                value(now, "presence_subscriptions", event="presence", status="active") >= 1
                and value(now, "presence_publications", event="presence") >= 1
            )

        wait_until(tables_counted, 10, "subscription and publication gauges")
        store = scrape(stack, "presence-store")
        assert value(store, "presence_db_pool_connections", state="max") == 10
        assert value(store, "presence_db_pool_connections", state="idle") >= 0
        topics = {
            dict(labels)["topic"] for name, labels in store if name == "presence_kafka_consumer_lag"
        }
        assert topics and all(t.endswith(("sip.requests", "sip.notify-outcomes")) for t in topics)
        notifier = scrape(stack, "notifier")
        lag_topics = {
            dict(labels)["topic"]
            for name, labels in notifier
            if name == "presence_kafka_consumer_lag"
        }
        assert lag_topics and all(t.endswith("presence.changes") for t in lag_topics)
        edge = scrape(stack, "sip-edge")
        assert "presence_sip_transactions_in_flight" in names(edge)
        assert any(
            name == "presence_kafka_consumer_lag" and "sip.edge." in dict(labels)["topic"]
            for name, labels in edge
        )
        # Each service shows only its own: no SIP counters in the notifier, no locks at the edge.
        assert "presence_sip_requests_total" not in names(notifier)
        assert "presence_lock_wait_seconds_count" not in names(edge)
        # Bounded labels: no user, URI or dialog in any label value.
        for samples in (edge, store, notifier):
            for _, labels in samples:
                assert not any("@" in v or "metrics-" in v for _, v in labels), labels
    finally:
        dialog.client.close()


def json_lines(stack: Stack, service: str) -> list[dict[str, str]]:
    lines = [line for line in stack.processes[service].log().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_one_correlation_id_follows_a_publish_through_every_service(stack: Stack) -> None:
    user = f"traced-{secrets.token_hex(4)}"
    presentity = f"sip:{user}@example.com"
    secret_note = f"note-{secrets.token_hex(6)}"
    first, second = watch(stack, presentity), watch(stack, presentity)
    try:
        publish(stack, presentity, secret_note)
        first.next_notify()
        second.next_notify()

        def edge_publish_line() -> dict[str, str] | None:
            return next(
                (
                    line
                    for line in json_lines(stack, "sip-edge")
                    if line["msg"].startswith(f"PUBLISH {presentity} ")
                ),
                None,
            )

        wait_until(lambda: edge_publish_line() is not None, 10, "the edge's PUBLISH line")
        published = edge_publish_line()
        assert published is not None
        correlation_id = published["correlation_id"]
        assert published["msg"].endswith(")") and "-> 200 OK" in published["msg"]
        assert published["service"] == "sip-edge" and published["level"] == "INFO"

        def traced(service: str) -> list[str]:
            return [
                line["msg"]
                for line in json_lines(stack, service)
                if line.get("correlation_id") == correlation_id
            ]

        def followed() -> bool:
            notifies = [m for m in traced("sip-edge") if m.startswith("NOTIFY presence of")]
            return (
                any(
                    m.startswith(f"publish {user}@example.com -> 200")
                    for m in traced("presence-store")
                )
                and any(m.startswith(f"presentity_changed {user}@") for m in traced("notifier"))
                and len(notifies) == 2
            )

        wait_until(followed, 10, f"{correlation_id} in the logs of all three services")
        notifies = [m for m in traced("sip-edge") if m.startswith("NOTIFY presence of")]
        assert all(m.endswith("-> 200 OK") for m in notifies), notifies
        # The published document is not logged at INFO, in any service.
        time.sleep(0.2)
        for service in SERVICES:
            assert secret_note not in stack.processes[service].log()
    finally:
        first.client.close()
        second.client.close()
