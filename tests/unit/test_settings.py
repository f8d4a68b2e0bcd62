from pathlib import Path

import pytest

from presence.settings import Settings, SettingsError, load


def assert_refused(name: str, value: str) -> None:
    """load() refuses `name=value` with a SettingsError that starts with the name."""
    with pytest.raises(SettingsError) as error:
        load({name: value})
    assert str(error.value).startswith(name), str(error.value)


def test_defaults_are_the_seed_modules() -> None:
    settings = load({})
    assert settings.presentity_table == "presentity"
    assert settings.active_watchers_table == "active_watchers"
    assert settings.watchers_table == "watchers"
    assert settings.xcap_table == "xcap_xml"
    assert settings.clean_period == 100
    assert settings.to_tag_pref == "10"
    assert settings.lock_set_size == 8
    assert settings.expires_offset == 0
    assert settings.force_active == 0
    assert settings.max_expires == 3600
    assert settings.contact_uri == "sip:127.0.0.1:5060"


def test_environment_overrides() -> None:
    settings = load(
        {
            "PRESENCE_FORCE_ACTIVE": "1",
            "PRESENCE_MAX_EXPIRES": "1800",
            "PRESENCE_PRESENTITY_TABLE": "pres_v2",
            "PRESENCE_SERVER_ADDRESS": "sip:presence.example.com",
            "PRESENCE_SIP_PORT": "5070",
        }
    )
    assert settings.force_active == 1
    assert settings.max_expires == 1800
    assert settings.presentity_table == "pres_v2"
    assert settings.contact_uri == "sip:presence.example.com"


def test_ipv6_listen_address_is_bracketed_in_contact() -> None:
    assert load({"PRESENCE_SIP_HOST": "::1"}).contact_uri == "sip:[::1]:5060"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PRESENCE_MAX_EXPIRES", "soon", "PRESENCE_MAX_EXPIRES: must be an integer, got 'soon'"),
        ("PRESENCE_MAX_EXPIRES", "0", "PRESENCE_MAX_EXPIRES: must be between 1 and"),
        ("PRESENCE_FORCE_ACTIVE", "2", "PRESENCE_FORCE_ACTIVE: must be 0 or 1"),
        ("PRESENCE_PRESENTITY_TABLE", "x; drop table", "PRESENCE_PRESENTITY_TABLE: must be"),
        ("PRESENCE_DB_URL", "mysql://u@h/db", "PRESENCE_DB_URL: must start with postgresql://"),
        ("PRESENCE_SIP_PORT", "70000", "PRESENCE_SIP_PORT: must be between 1 and 65535"),
        ("PRESENCE_KAFKA_BOOTSTRAP", "nohost", "PRESENCE_KAFKA_BOOTSTRAP: must be host:port"),
        ("PRESENCE_SERVER_ADDRESS", "10.0.0.1", "PRESENCE_SERVER_ADDRESS: must be a SIP URI"),
        ("PRESENCE_FORCE_ACTIV", "1", "PRESENCE_FORCE_ACTIV: unknown setting"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        load({variable: value})
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_min_expires_above_max_is_refused() -> None:
    with pytest.raises(SettingsError, match="PRESENCE_MIN_EXPIRES"):
        load({"PRESENCE_MIN_EXPIRES": "7200"})


def test_env_file_fills_in_what_the_environment_lacks(tmp_path: Path) -> None:
    env_file = tmp_path / "presence.env"
    env_file.write_text(
        "# comment\n\nPRESENCE_CLEAN_PERIOD=30\nexport PRESENCE_TO_TAG_PREF='77'\n"
        "PRESENCE_LOCK_SET_SIZE=4\n"
    )
    settings = load({"PRESENCE_ENV_FILE": str(env_file), "PRESENCE_LOCK_SET_SIZE": "16"})
    assert (settings.clean_period, settings.to_tag_pref, settings.lock_set_size) == (30, "77", 16)


def test_env_file_syntax_error_names_the_line(tmp_path: Path) -> None:
    env_file = tmp_path / "presence.env"
    env_file.write_text("PRESENCE_CLEAN_PERIOD=30\nnonsense\n")
    with pytest.raises(SettingsError, match=r"presence.env:2: expected KEY=VALUE"):
        load({"PRESENCE_ENV_FILE": str(env_file)})


def test_settings_are_immutable() -> None:
    with pytest.raises(AttributeError):
        Settings().max_expires = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "variable", ["PRESENCE_AUTH_SECRET", "PRESENCE_XCAP_SECRET", "PRESENCE_ADMIN_TOKEN"]
)
def test_secrets_have_a_minimum_length_and_are_never_echoed(variable: str) -> None:
    with pytest.raises(SettingsError) as error:
        load({variable: "hunter2-short"})
    message = str(error.value)
    assert message.startswith(f"{variable}: must be at least 16 characters, got 13")
    assert "hunter2" not in message
    assert load({variable: "x" * 16}) is not None
    assert load({variable: ""}) is not None  # empty: the feature stays off


def test_xcap_write_rate_setting() -> None:
    assert load({}).xcap_writes_per_minute == 60
    assert load({"PRESENCE_XCAP_WRITES_PER_MINUTE": "0"}).xcap_writes_per_minute == 0
    with pytest.raises(SettingsError, match="PRESENCE_XCAP_WRITES_PER_MINUTE: must be between"):
        load({"PRESENCE_XCAP_WRITES_PER_MINUTE": "-1"})


def test_the_observability_bind_address_is_a_compose_variable_not_a_typo() -> None:
    assert load({"PRESENCE_OBSERVABILITY_BIND": "0.0.0.0"}) is not None


def test_authentication_brakes_and_qop_settings() -> None:

    defaults = load({})
    assert (defaults.auth_max_failures, defaults.auth_max_source_failures) == (10, 100)
    assert defaults.auth_require_qop == 1 and defaults.trusted_proxy_udp == 0
    assert load({"PRESENCE_AUTH_REQUIRE_QOP": "no"}).auth_require_qop == 0
    for name, value in (
        ("PRESENCE_AUTH_REQUIRE_QOP", "maybe"),
        ("PRESENCE_TRUSTED_PROXY_UDP", "2"),
        ("PRESENCE_AUTH_MAX_SOURCE_FAILURES", "0"),
    ):
        assert_refused(name, value)


def test_notify_deny_networks_are_cidr_lists() -> None:
    settings = load({"PRESENCE_NOTIFY_DENY_NETWORKS": "10.0.0.0/8, 192.0.2.7 ,fd00::/8"})
    assert [str(n) for n in settings.denied_notify_networks] == [
        "10.0.0.0/8",
        "192.0.2.7/32",
        "fd00::/8",
    ]
    assert load({}).denied_notify_networks == ()
    with pytest.raises(SettingsError) as error:
        load({"PRESENCE_NOTIFY_DENY_NETWORKS": "10.0.0.0/8,intranet"})
    assert str(error.value) == (
        "PRESENCE_NOTIFY_DENY_NETWORKS: must be comma-separated CIDR networks, got 'intranet'"
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PRESENCE_TCP_MAX_WRITE_BUFFER", "1024"),
        ("PRESENCE_NOTIFY_CONNECT_TIMEOUT_MS", "0"),
        ("PRESENCE_TCP_MAX_CONNECTIONS_PER_ADDRESS", "0"),
        ("PRESENCE_NOTIFY_DNS_WORKERS", "1000"),
    ],
)
def test_delivery_bounds_are_range_checked(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        load({variable: value})
    assert str(error.value).startswith(f"{variable}: must be between")


def test_event_loop_is_uvloop_unless_asked_for_the_standard_one() -> None:
    assert load({}).event_loop == "uvloop"
    assert load({"PRESENCE_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    with pytest.raises(SettingsError, match="PRESENCE_EVENT_LOOP: must be one of"):
        load({"PRESENCE_EVENT_LOOP": "trio"})


def test_kafka_fetch_wait_is_bounded_milliseconds() -> None:
    assert load({}).kafka_fetch_wait_ms == 100
    assert load({"PRESENCE_KAFKA_FETCH_WAIT_MS": "20"}).kafka_fetch_wait_ms == 20
    for bad in ("0", "1001", "soon"):
        with pytest.raises(SettingsError, match="PRESENCE_KAFKA_FETCH_WAIT_MS"):
            load({"PRESENCE_KAFKA_FETCH_WAIT_MS": bad})


def test_secure_transports_defaults_and_the_certificate_pair() -> None:
    settings = load({})
    assert (settings.sip_tls_port, settings.sip_ws_port, settings.sip_wss_port) == (
        5061,
        5066,
        7443,
    )
    assert not settings.tls_enabled and settings.store_https_port == 8443
    assert settings.sip_handshake_timeout_ms == 5000
    paired = load({"PRESENCE_TLS_CERT": "/c.pem", "PRESENCE_TLS_KEY": "/k.pem"})
    assert paired.tls_enabled
    with pytest.raises(SettingsError, match=r"^PRESENCE_TLS_KEY: must be set too"):
        load({"PRESENCE_TLS_CERT": "/c.pem"})
    with pytest.raises(SettingsError, match=r"^PRESENCE_TLS_CERT: must be set too"):
        load({"PRESENCE_TLS_KEY": "/k.pem"})
    with pytest.raises(SettingsError, match=r"^PRESENCE_TLS_CLIENT_CA: needs"):
        load({"PRESENCE_TLS_CLIENT_CA": "/ca.pem"})
    with pytest.raises(SettingsError, match="PRESENCE_SIP_WS_PORT: must be between 0"):
        load({"PRESENCE_SIP_WS_PORT": "70000"})


def test_the_contact_of_a_dialog_names_the_transport_it_came_over() -> None:
    settings = load({"PRESENCE_SIP_HOST": "192.0.2.1"})
    assert settings.contact_uri_for("udp:203.0.113.5:5060") == "sip:192.0.2.1:5060"
    assert settings.contact_uri_for("tcp:203.0.113.5:4711") == "sip:192.0.2.1:5060"
    assert settings.contact_uri_for("tls:203.0.113.5:4711") == "sip:192.0.2.1:5061;transport=tls"
    assert settings.contact_uri_for("ws:203.0.113.5:4711") == "sip:192.0.2.1:5066;transport=ws"
    assert settings.contact_uri_for("wss:[2001:db8::1]:4711") == (
        "sip:192.0.2.1:7443;transport=wss"
    )
    named = load({"PRESENCE_SERVER_ADDRESS": "sip:presence.example.com:5070"})
    assert named.contact_uri_for("wss:203.0.113.5:1") == (
        "sip:presence.example.com:7443;transport=wss"
    )
    assert named.contact_uri_for("udp:203.0.113.5:1") == "sip:presence.example.com:5070"


def test_trusted_proxies_may_be_known_by_their_client_certificates() -> None:
    mutual = load(
        {
            "PRESENCE_AUTH": "trusted-proxy",
            "PRESENCE_TLS_CERT": "/c.pem",
            "PRESENCE_TLS_KEY": "/k.pem",
            "PRESENCE_TLS_CLIENT_CA": "/ca.pem",
        }
    )
    mutual.check_authentication()  # no PRESENCE_TRUSTED_PROXIES needed
    with pytest.raises(SettingsError, match="PRESENCE_TRUSTED_PROXIES: must be set"):
        load({"PRESENCE_AUTH": "trusted-proxy"}).check_authentication()


def test_record_attempts_and_admission_settings() -> None:

    settings = load({})
    assert (settings.record_attempts, settings.edge_queue_delay_ms, settings.edge_min_backlog) == (
        3, 1000, 200,
    )  # fmt: skip
    settings = load({"PRESENCE_RECORD_ATTEMPTS": "5", "PRESENCE_EDGE_MIN_BACKLOG": "20"})
    assert (settings.record_attempts, settings.edge_min_backlog) == (5, 20)
    for name, value in (("PRESENCE_RECORD_ATTEMPTS", "0"), ("PRESENCE_EDGE_QUEUE_DELAY_MS", "5")):
        assert_refused(name, value)


def test_digest_algorithms_are_known_names_each_once() -> None:

    assert load({}).offered_algorithms == ("SHA-256", "MD5")
    assert load({"PRESENCE_AUTH_ALGORITHMS": "MD5, SHA-256"}).offered_algorithms == (
        "MD5", "SHA-256",
    )  # fmt: skip
    for value in ("", "SHA-1", "MD5,MD5"):
        assert_refused("PRESENCE_AUTH_ALGORITHMS", value)
