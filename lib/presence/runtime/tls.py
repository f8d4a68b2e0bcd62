"""TLS contexts of the services (SIP over TLS and WSS in sip-edge, HTTPS in
presence-store), from the files the settings name.

The baseline is the standard library's `ssl.create_default_context` (its cipher
list, no compression, no renegotiation) with TLS 1.2 as the oldest version. A
file that cannot be read or does not hold what it should stops the service at
start with one line naming the variable (TlsConfigError).
"""

from __future__ import annotations

import ssl

from presence.settings import Settings


class TlsConfigError(ValueError):
    """One line naming the setting whose file is unusable."""


def server_context(settings: Settings) -> ssl.SSLContext:
    """The listeners' context: our certificate; with PRESENCE_TLS_CLIENT_CA a client
    certificate is asked for (optional: phones have none) and verified against it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except FileNotFoundError as error:
        raise TlsConfigError(
            f"PRESENCE_TLS_CERT/PRESENCE_TLS_KEY: {error.filename}: no such file"
        ) from None
    except (OSError, ssl.SSLError) as error:
        raise TlsConfigError(
            f"PRESENCE_TLS_CERT/PRESENCE_TLS_KEY: cannot load {settings.tls_cert} with "
            f"{settings.tls_key}: {error}"
        ) from None
    if settings.tls_client_ca:
        _load_ca(context, settings.tls_client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(settings: Settings) -> ssl.SSLContext:
    """The edge's outgoing TLS connections (NOTIFYs to sips: targets): the peer's
    certificate is verified against the system's CAs and PRESENCE_TLS_CLIENT_CA, its
    name against the host it was reached by (RFC 5922); our certificate is offered."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.tls_client_ca:
        _load_ca(context, settings.tls_client_ca)
    if settings.tls_cert:
        try:
            context.load_cert_chain(settings.tls_cert, settings.tls_key)
        except (OSError, ssl.SSLError) as error:
            raise TlsConfigError(f"PRESENCE_TLS_CERT/PRESENCE_TLS_KEY: {error}") from None
    return context


def _load_ca(context: ssl.SSLContext, path: str) -> None:
    try:
        context.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as error:
        raise TlsConfigError(f"PRESENCE_TLS_CLIENT_CA: cannot load {path}: {error}") from None


def peer_verified(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bool:
    """Whether the peer of a server-side connection presented a certificate that
    verified against PRESENCE_TLS_CLIENT_CA (with CERT_OPTIONAL, an unverifiable one
    fails the handshake; none at all leaves getpeercert() empty)."""
    return ssl_object is not None and bool(ssl_object.getpeercert())
