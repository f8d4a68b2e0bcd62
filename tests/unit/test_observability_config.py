"""The observability profile's files agree with the code: Prometheus scrapes each
service on its HTTP port, and the dashboard queries only metrics that exist; and
they are safe by default: published on loopback, Grafana without anonymous access
or a default password (its entrypoint, run here with a stand-in Grafana)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from presence.runtime import metrics
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


ENTRYPOINT = OBSERVABILITY / "grafana" / "entrypoint.sh"


def compose_service(name: str) -> str:
    """One service's block of docker-compose.yml (its lines at deeper indentation)."""
    compose = (REPO / "docker-compose.yml").read_text()
    block = re.search(rf"^  {name}:\n((?:    .*\n|\s*\n)+)", compose, re.MULTILINE)
    assert block, name
    return block.group(1)


def test_prometheus_and_grafana_are_published_on_loopback_unless_told_otherwise() -> None:
    for name, port in (("prometheus", "9090"), ("grafana", "3000")):
        ports = re.findall(r'^      - "(.*)"$', compose_service(name).split("ports:")[1], re.M)
        assert ports and all(
            p.startswith("${PRESENCE_OBSERVABILITY_BIND:-127.0.0.1}:") and p.endswith(f":{port}")
            for p in ports
        ), (name, ports)


def test_grafana_has_no_anonymous_access_and_no_default_password() -> None:
    grafana = compose_service("grafana")
    assert 'GF_AUTH_ANONYMOUS_ENABLED: "false"' in grafana
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in grafana
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana  # only the entrypoint sets it
    assert ":-admin}" not in grafana
    assert "GRAFANA_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:-}" in grafana
    assert 'entrypoint: ["/bin/sh", "/presence/grafana-entrypoint.sh"]' in grafana
    assert (
        "./infra/observability/grafana/entrypoint.sh:/presence/grafana-entrypoint.sh:ro" in grafana
    )
    # The generated password lives next to Grafana's database, in a volume.
    assert "- grafana-data:/var/lib/grafana" in grafana


def run_entrypoint(tmp_path: Path, password: str | None = None) -> subprocess.CompletedProcess[str]:
    """The entrypoint with a stand-in for Grafana's /run.sh that prints the password
    Grafana would get."""
    stub = tmp_path / "run.sh"
    stub.write_text(
        '#!/bin/sh\necho "grafana gets: $GF_SECURITY_ADMIN_PASSWORD ${GRAFANA_ADMIN_PASSWORD:-}"\n'
    )
    stub.chmod(0o755)
    env = {
        "PATH": os.environ["PATH"],
        "GRAFANA_PASSWORD_FILE": str(tmp_path / "admin-password"),
        "GRAFANA_RUN": str(stub),
    }
    if password is not None:
        env["GRAFANA_ADMIN_PASSWORD"] = password
    return subprocess.run(
        ["/bin/sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30
    )


def test_grafana_admin_password_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = run_entrypoint(tmp_path)
    assert first.returncode == 0, first.stderr
    generated = (tmp_path / "admin-password").read_text().strip()
    assert re.fullmatch(r"[A-Za-z0-9]{24}", generated)
    assert (tmp_path / "admin-password").stat().st_mode & 0o077 == 0
    assert first.stdout.strip() == f"grafana gets: {generated}"
    assert generated not in first.stderr  # the log says where, not what
    assert "docker compose exec grafana cat" in first.stderr
    again = run_entrypoint(tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == f"grafana gets: {generated}"


def test_grafana_admin_password_from_the_environment_must_be_strong(tmp_path: Path) -> None:
    given = run_entrypoint(tmp_path, "correct-horse-battery")
    assert given.returncode == 0
    assert given.stdout.strip() == "grafana gets: correct-horse-battery"
    assert not (tmp_path / "admin-password").exists()
    for weak in ("admin", "short"):
        refused = run_entrypoint(tmp_path, weak)
        assert refused.returncode != 0 and refused.stdout == ""
        assert "GRAFANA_ADMIN_PASSWORD must be at least 12 characters" in refused.stderr
