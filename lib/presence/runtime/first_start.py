"""What a deployment needs before its first start, made once into a directory and
read from there by every later start (docker-compose's `init` service and its
`presence-secrets` volume; docs/DOCKER.md):

    python -m presence.runtime.first_start DIR [--host NAME ...] [--owner UID]

makes what is missing in DIR: the SIP digest nonce key (`auth-secret`), the key of
the XCAP passwords (`xcap-secret`), the admin API's token (`admin-token`), and a
local CA with a server certificate it signs (`tls/`, presence.runtime.local_ca, naming the
HOSTs too). Files already there are kept, so secrets, passwords derived from them
and a CA users trusted stay valid across restarts. It prints what it made and how
to read it.

The services read the directory named by PRESENCE_SECRETS_DIR (presence.settings):
each of those settings that the environment leaves unset or empty is taken from its
file; a value given in the environment wins.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

# Setting (environment variable) -> its file in the directory. Secrets are the file's
# text; the certificate and key settings are file paths, so the path is the value.
SECRET_FILES = {
    "PRESENCE_AUTH_SECRET": "auth-secret",
    "PRESENCE_XCAP_SECRET": "xcap-secret",
    "PRESENCE_ADMIN_TOKEN": "admin-token",
}
PATH_FILES = {
    "PRESENCE_TLS_CERT": "tls/server.pem",
    "PRESENCE_TLS_KEY": "tls/server-key.pem",
}
CA_CERT = "tls/ca.pem"
SECRET_BYTES = 32  # 64 hex characters


def with_stored_values(env: Mapping[str, str], directory: Path) -> dict[str, str]:
    """`env` plus, for each setting it leaves unset or empty, the value stored in
    `directory` (when its file exists). Both certificate files come from the
    directory, or neither: a certificate given in the environment keeps its key."""
    merged = dict(env)
    for name, file in SECRET_FILES.items():
        path = directory / file
        if not env.get(name) and path.is_file():
            merged[name] = path.read_text(encoding="utf-8").strip()
    stored = {name: directory / file for name, file in PATH_FILES.items()}
    if not any(env.get(name) for name in PATH_FILES) and all(p.is_file() for p in stored.values()):
        merged.update({name: str(path) for name, path in stored.items()})
    return merged


def prepare(directory: Path, hosts: tuple[str, ...] = (), owner: int | None = None) -> list[str]:
    """Make what is missing in `directory`; the names of the files made. With
    `owner` (run as root), every file but the CA's key is handed to that user, who
    runs the services; the CA's key stays root's (only this command signs)."""
    from presence.runtime.local_ca import ensure, paths  # cryptography: only where needed

    directory.mkdir(parents=True, exist_ok=True)
    tls = directory / "tls"
    before = {path for path in directory.rglob("*") if path.is_file()}
    for file in SECRET_FILES.values():
        path = directory / file
        if not path.is_file():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(secrets.token_hex(SECRET_BYTES) + "\n")
    ensure(tls, hosts)
    made = sorted(
        str(path.relative_to(directory))
        for path in directory.rglob("*")
        if path.is_file() and path not in before
    )
    if owner is not None:
        ca_key = paths(tls).ca_key
        for path in (directory, tls, *directory.rglob("*")):
            if path != ca_key:
                os.chown(path, owner, owner)
        (directory / CA_CERT).chmod(0o644)
    return made


def instructions(directory: Path, service: str = "sip-edge") -> str:
    """How a user reads the stored values from a running compose stack."""
    read = f"docker compose exec {service} cat {directory}"
    return "\n".join(
        [
            f"  SIP digest nonce key:  {read}/{SECRET_FILES['PRESENCE_AUTH_SECRET']}",
            f"  XCAP secret:           {read}/{SECRET_FILES['PRESENCE_XCAP_SECRET']}",
            f"  admin API token:       {read}/{SECRET_FILES['PRESENCE_ADMIN_TOKEN']}",
            f"  the CA clients trust:  {read}/{CA_CERT} > presence-ca.pem",
            "  (a value set in the environment wins over its file)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m presence.runtime.first_start")
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        help="a name or address the server certificate names too (repeatable; commas "
        "separate several)",
    )
    parser.add_argument("--owner", type=int, help="uid that gets the files (run as root)")
    args = parser.parse_args(argv)
    hosts = tuple(h.strip() for value in args.host for h in value.split(",") if h.strip())
    made = prepare(args.directory, hosts, args.owner)
    if made:
        print(f"first start: made {', '.join(made)} in {args.directory}; read them with:")
    else:
        print(f"first start: reusing what {args.directory} holds; read it with:")
    print(instructions(args.directory), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
