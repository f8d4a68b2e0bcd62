"""Where responses go (RFC 3261 §18.2.1-2, RFC 3581), without I/O."""

from __future__ import annotations

from presence.sip.grammar import Via

DEFAULT_PORT = {"UDP": 5060, "TCP": 5060, "TLS": 5061, "SCTP": 5060, "WS": 80, "WSS": 443}


def stamp_via(via: Via, source_host: str, source_port: int) -> bool:
    """Add received (and fill rport) to the top Via of a request as §18.2.1 and RFC 3581
    require. Returns True when the Via changed."""
    changed = False
    if "rport" in via.params and not via.params["rport"]:
        via.params["rport"] = str(source_port)
        via.params["received"] = source_host
        changed = True
    elif via.host.strip("[]").lower() != source_host.lower():
        via.params["received"] = source_host
        changed = True
    return changed


def response_address(via: Via, source_host: str, source_port: int) -> tuple[str, int]:
    """Where a UDP response goes: back to the source port when the client asked for
    rport, else to the received address at the sent-by port (§18.2.2)."""
    if "rport" in via.params:
        return source_host, source_port
    return source_host, via.port or DEFAULT_PORT.get(via.transport.upper(), 5060)
