"""docker-compose.yml agrees with the code for the secure transports and the first
start: the published ports are the listeners' defaults, the init service fills the
directory the services read (PRESENCE_SECRETS_DIR) before they start, secrets have
no fixed defaults (the environment wins, else the volume), and every PRESENCE_*
variable the file names is a known one."""

from __future__ import annotations

import re
from pathlib import Path

from presence.settings import SCRIPT_VARIABLES, Settings, env_name
from tests.unit.test_observability_config import compose_service

REPO = Path(__file__).resolve().parents[2]
COMPOSE = (REPO / "docker-compose.yml").read_text()
SECRETS_DIR = re.search(r"^  PRESENCE_SECRETS_DIR: (\S+)$", COMPOSE, re.M)


def published(service: str) -> list[str]:
    block = compose_service(service).split("ports:")[1]
    return re.findall(r'^      - "(.*)"$', block, re.M)


def test_sip_edge_publishes_tls_and_the_websocket_ports() -> None:
    defaults = Settings()
    assert published("sip-edge") == [
        "${PRESENCE_SIP_PORT:-5060}:5060/udp",
        "${PRESENCE_SIP_PORT:-5060}:5060/tcp",
        f"${{PRESENCE_SIP_TLS_PORT:-{defaults.sip_tls_port}}}:{defaults.sip_tls_port}/tcp",
        f"${{PRESENCE_SIP_WS_PORT:-{defaults.sip_ws_port}}}:{defaults.sip_ws_port}/tcp",
        f"${{PRESENCE_SIP_WSS_PORT:-{defaults.sip_wss_port}}}:{defaults.sip_wss_port}/tcp",
    ]
    https = defaults.store_https_port
    assert published("presence-store") == [f"${{PRESENCE_STORE_HTTPS_PORT:-{https}}}:{https}/tcp"]


def test_the_init_service_fills_what_the_services_read_before_they_start() -> None:
    assert SECRETS_DIR, "PRESENCE_SECRETS_DIR is not set for the services"
    directory = SECRETS_DIR.group(1)
    init = compose_service("init")
    assert f'"presence.runtime.first_start", "{directory}"' in init
    assert f"      - presence-secrets:{directory}\n" in init  # writable for it alone
    assert "    user: root\n" in init  # hands the files to the services' user
    owner = re.search(r'"--owner", "(\d+)"', init)
    for dockerfile in ("services/sip-edge/Dockerfile", "services/presence-store/Dockerfile"):
        assert f"--uid {owner.group(1) if owner else '?'} " in (REPO / dockerfile).read_text()
    for service in ("sip-edge", "presence-store"):
        block = compose_service(service)
        assert f"      - presence-secrets:{directory}:ro\n" in block, service
        assert re.search(r"      init:\n        condition: service_completed_successfully", block)
    tests = compose_service("tests")
    assert f"      - presence-secrets:{directory}:ro\n" in tests
    assert f"PRESENCE_TEST_CA: {directory}/tls/ca.pem" in tests
    assert re.search(r"^  presence-secrets:$", COMPOSE.split("\nvolumes:\n")[1], re.M)


def test_secrets_and_certificates_have_no_fixed_defaults() -> None:
    for name in (
        "PRESENCE_AUTH_SECRET",
        "PRESENCE_XCAP_SECRET",
        "PRESENCE_ADMIN_TOKEN",
        "PRESENCE_TLS_CERT",
        "PRESENCE_TLS_KEY",
    ):
        # Empty unless the environment gives one: then the volume's value is read.
        assert f"  {name}: ${{{name}:-}}\n" in COMPOSE, name


def test_the_checks_reach_tls_and_wss_on_the_listeners_ports() -> None:
    defaults = Settings()
    tests = compose_service("tests")
    assert f"PRESENCE_TEST_SIP_TLS: sip-edge:{defaults.sip_tls_port}" in tests
    assert f"PRESENCE_TEST_SIP_WSS: sip-edge:{defaults.sip_wss_port}" in tests


def test_every_presence_variable_of_the_file_is_known() -> None:
    known = {env_name(name) for name in Settings.__dataclass_fields__} | SCRIPT_VARIABLES
    named = set(re.findall(r"\b(PRESENCE_[A-Z0-9_]+)", COMPOSE))
    # The checks' own variables, and image names (not settings).
    named -= {n for n in named if n.startswith("PRESENCE_TEST_") or n.endswith("_IMAGE")}
    assert named - known == set()


def test_the_services_dockerfiles_differ_only_where_the_services_do() -> None:
    """Each service folder builds its own image; the three files share one layout, and
    differ only in the line after each "# this service:" comment (and the name in the
    build command they show)."""

    def shared(service: str) -> list[str]:
        lines = (REPO / "services" / service / "Dockerfile").read_text().splitlines()
        kept = []
        for number, line in enumerate(lines):
            if line.startswith("# this service:"):
                assert lines[number + 1].startswith(("ARG ", "COPY ", "EXPOSE ", "CMD "))
            elif number == 0 or not lines[number - 1].startswith("# this service:"):
                kept.append(line.replace(service, "<service>"))
        return kept

    notifier = shared("notifier")
    assert shared("sip-edge") == notifier
    assert shared("presence-store") == notifier
    assert "FROM ${PYTHON_IMAGE} AS build" in notifier
    assert "COPY services/${SERVICE} services/${SERVICE}" in notifier
