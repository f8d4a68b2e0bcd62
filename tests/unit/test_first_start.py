"""The values a deployment makes at its first start (presence.runtime.first_start): made once,
kept on later starts, read by the settings when the environment gives none."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from presence.runtime.first_start import (
    CA_CERT,
    PATH_FILES,
    SECRET_FILES,
    main,
    prepare,
    with_stored_values,
)
from presence.settings import load


def test_the_first_start_makes_every_secret_and_a_certificate_once(tmp_path: Path) -> None:
    made = prepare(tmp_path, ("sip-edge", "presence.example.com"))
    assert set(made) == {
        *SECRET_FILES.values(),
        *PATH_FILES.values(),
        CA_CERT,
        "tls/ca-key.pem",
    }
    values = {file: (tmp_path / file).read_text() for file in SECRET_FILES.values()}
    assert len(set(values.values())) == 3 and all(len(v.strip()) == 64 for v in values.values())
    assert all((tmp_path / file).stat().st_mode & 0o077 == 0 for file in SECRET_FILES.values())
    certificate = (tmp_path / PATH_FILES["PRESENCE_TLS_CERT"]).read_bytes()

    assert prepare(tmp_path, ("sip-edge",)) == []  # a later start: nothing new
    assert {file: (tmp_path / file).read_text() for file in SECRET_FILES.values()} == values
    assert (tmp_path / PATH_FILES["PRESENCE_TLS_CERT"]).read_bytes() == certificate

    # The certificate names the hosts given, and the CA verifies it.
    context = ssl.create_default_context(cafile=str(tmp_path / CA_CERT))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(
        tmp_path / PATH_FILES["PRESENCE_TLS_CERT"], tmp_path / PATH_FILES["PRESENCE_TLS_KEY"]
    )
    for host in ("sip-edge", "presence.example.com", "localhost"):
        client_side, server_side = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = context.wrap_bio(client_side, server_side, server_hostname=host)
        peer = server.wrap_bio(server_side, client_side, server_side=True)
        for _ in range(4):  # a handshake in memory: a few rounds of messages
            for end in (client, peer):
                try:
                    end.do_handshake()
                except ssl.SSLWantReadError:
                    pass
        assert client.getpeercert()["subjectAltName"]  # verified, name matched


def test_a_missing_file_is_made_again_and_the_others_are_kept(tmp_path: Path) -> None:
    prepare(tmp_path)
    token = (tmp_path / "admin-token").read_text()
    (tmp_path / "xcap-secret").unlink()
    assert prepare(tmp_path) == ["xcap-secret"]
    assert (tmp_path / "admin-token").read_text() == token


def test_the_owner_gets_every_file_but_the_ca_key(tmp_path: Path) -> None:
    # Run as anyone: handing the files to oneself exercises the same calls.
    prepare(tmp_path / "secrets", owner=os.getuid())
    assert (tmp_path / "secrets" / CA_CERT).stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "secrets" / "tls" / "ca-key.pem").stat().st_mode & 0o077 == 0


def test_stored_values_fill_what_the_environment_leaves_unset_or_empty(tmp_path: Path) -> None:
    prepare(tmp_path)
    stored = (tmp_path / "auth-secret").read_text().strip()
    merged = with_stored_values(
        {"PRESENCE_AUTH_SECRET": "", "PRESENCE_ADMIN_TOKEN": "from-the-environment-1234"},
        tmp_path,
    )
    assert merged["PRESENCE_AUTH_SECRET"] == stored
    assert merged["PRESENCE_ADMIN_TOKEN"] == "from-the-environment-1234"  # the environment wins
    assert merged["PRESENCE_XCAP_SECRET"] == (tmp_path / "xcap-secret").read_text().strip()
    assert merged["PRESENCE_TLS_CERT"] == str(tmp_path / "tls" / "server.pem")
    assert merged["PRESENCE_TLS_KEY"] == str(tmp_path / "tls" / "server-key.pem")


def test_a_certificate_from_the_environment_keeps_its_own_key(tmp_path: Path) -> None:
    prepare(tmp_path)
    merged = with_stored_values({"PRESENCE_TLS_CERT": "/etc/mine.pem"}, tmp_path)
    assert merged["PRESENCE_TLS_CERT"] == "/etc/mine.pem"
    assert "PRESENCE_TLS_KEY" not in merged  # not the stored key of another certificate


def test_an_empty_directory_gives_nothing(tmp_path: Path) -> None:
    assert with_stored_values({"PRESENCE_AUTH": "digest"}, tmp_path) == {"PRESENCE_AUTH": "digest"}


def test_the_settings_read_the_secrets_directory(tmp_path: Path) -> None:
    prepare(tmp_path)
    settings = load({"PRESENCE_SECRETS_DIR": str(tmp_path), "PRESENCE_AUTH": "digest"})
    settings.check_authentication()  # the stored nonce key satisfies digest
    assert settings.auth_secret == (tmp_path / "auth-secret").read_text().strip()
    assert settings.tls_enabled and settings.tls_key == str(tmp_path / "tls" / "server-key.pem")
    given = load({"PRESENCE_SECRETS_DIR": str(tmp_path), "PRESENCE_XCAP_SECRET": "x" * 20})
    assert given.xcap_secret == "x" * 20
    assert load({}).secrets_dir == ""


def test_the_command_says_how_to_read_what_it_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path), "--host", "sip-edge,presence-store"]) == 0
    first = capsys.readouterr().out
    assert "made admin-token, auth-secret" in first
    assert f"docker compose exec sip-edge cat {tmp_path}/auth-secret" in first
    assert f"docker compose exec sip-edge cat {tmp_path}/tls/ca.pem" in first
    assert main([str(tmp_path)]) == 0
    assert "reusing" in capsys.readouterr().out


def test_presencectl_takes_the_stored_admin_token_unless_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from presencectl.cli import parser

    prepare(tmp_path)
    stored = (tmp_path / "admin-token").read_text().strip()
    monkeypatch.delenv("PRESENCE_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("PRESENCE_SECRETS_DIR", str(tmp_path))
    assert parser().parse_args(["presentities"]).token == stored
    monkeypatch.setenv("PRESENCE_ADMIN_TOKEN", "given-in-the-environment")
    assert parser().parse_args(["presentities"]).token == "given-in-the-environment"
