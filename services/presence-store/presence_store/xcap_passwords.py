"""`python -m presence_store.xcap_passwords AOR...`: each user's XCAP password
(presence.xcap.credentials derives it from PRESENCE_XCAP_SECRET), for the operator
to hand out."""

from __future__ import annotations

import sys

from presence.settings import SettingsError, load
from presence.xcap.credentials import aor_of, password_for


def main() -> None:
    try:
        settings = load()
    except SettingsError as error:
        sys.exit(f"configuration error: {error}")
    if not settings.xcap_secret:
        sys.exit("PRESENCE_XCAP_SECRET is not set: there are no XCAP passwords")
    if len(sys.argv) < 2:
        sys.exit("usage: python -m presence_store.xcap_passwords sip:user@domain ...")
    for xui in sys.argv[1:]:
        print(f"{aor_of(xui)}\t{password_for(settings.xcap_secret, xui)}")


if __name__ == "__main__":
    main()
