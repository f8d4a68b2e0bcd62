"""presencectl: the operator's command line for presence-store's admin API.

    presencectl presentities [--domain D] [--event E] [--all]
    presencectl show sip:alice@example.com
    presencectl watchers sip:alice@example.com
    presencectl subscriptions sip:bob@example.com
    presencectl refresh sip:alice@example.com ... | --domain D | --every
    presencectl update-watchers sip:alice@example.com ... | --domain D | --every
    presencectl cleanup
    presencectl terminate <subscription> [--reason deactivated]
    presencectl dead-letters [--limit N] [--all]

Tables for people, `--json` for scripts. Where: --url (PRESENCECTL_URL, default
http://127.0.0.1:8080); token: --token or PRESENCE_ADMIN_TOKEN. Run as
`presencectl` (installed with the project) or `python -m presencectl`.
"""

from presencectl.cli import main, run

__all__ = ["main", "run"]
