"""The observability profile's files agree with the code: Prometheus scrapes each
service on its HTTP port, and the dashboard queries only metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from presence import metrics
from presence.settings import Settings

REPO = Path(__file__).resolve().parents[2]
OBSERVABILITY = REPO / "infra" / "observability"


def test_prometheus_scrapes_every_service_on_its_port() -> None:
    config = (OBSERVABILITY / "prometheus.yml").read_text()
    jobs = dict(
        re.findall(r"job_name: (\S+)\n\s+dns_sd_configs:\n\s+- names: \[\S+\]\n\s+type: A\n"
                   r"\s+port: (\d+)", config)
    )  # fmt: skip
    defaults = Settings()
    assert jobs == {
        "sip-edge": str(defaults.edge_http_port),
        "presence-store": str(defaults.store_http_port),
        "notifier": str(defaults.notifier_http_port),
    }
    compose = (REPO / "docker-compose.yml").read_text()
    assert "./infra/observability/prometheus.yml:/etc/prometheus/prometheus.yml" in compose


def test_the_dashboard_queries_existing_metrics() -> None:
    dashboard = json.loads((OBSERVABILITY / "grafana" / "dashboards" / "presence.json").read_text())
    known = {
        sample_name
        for family in metrics.REGISTRY.collect()
        for sample_name in (
            family.name,
            f"{family.name}_total",
            f"{family.name}_bucket",
            f"{family.name}_count",
        )
    } | {"up"}
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(presence_[a-z_]+|up)\b(?=[{\[)])", target["expr"])
    }
    assert queried and queried <= known, queried - known
    assert all(p["datasource"]["uid"] == "prometheus" for p in dashboard["panels"])
