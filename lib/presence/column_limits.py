"""How long each SIP field the store keeps may be: one table, checked against the
schema (schema/*.sql) by tests/unit/test_column_limits.py, used by the edge to refuse
a request whose field a column could not hold before it reaches the bus.

PostgreSQL counts varchar(N) in characters, so the limits are in characters too.
Columns of type text have no limit of their own; CONTACT and ROUTE_SET are the
product's limits for them (a real Contact with a GRUU, ;ob and +sip.instance is a
few hundred characters).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    length: int
    # The varchar columns the limit protects, as "table.column" (table names as the
    # schema writes them, "{presentity_table}" for the configurable ones).
    columns: tuple[str, ...] = ()


USER = Limit(
    64,
    (
        "{presentity_table}.username",
        "{active_watchers_table}.to_user",
        "{active_watchers_table}.from_user",
        "{watchers_table}.p_user",
        "{watchers_table}.w_user",
        "location.username",
        "credentials.username",
    ),
)
DOMAIN = Limit(
    128,
    (
        "{presentity_table}.domain",
        "{active_watchers_table}.to_domain",
        "{active_watchers_table}.from_domain",
        "{watchers_table}.p_domain",
        "{watchers_table}.w_domain",
        "{xcap_table}.domain",
        "location.domain",
        "credentials.domain",
    ),
)
EVENT = Limit(64, ("{presentity_table}.event", "{active_watchers_table}.event"))
EVENT_ID = Limit(64, ("{active_watchers_table}.event_id",))
TAG = Limit(128, ("{active_watchers_table}.to_tag", "{active_watchers_table}.from_tag"))
CALL_ID = Limit(255, ("{active_watchers_table}.callid", "location.callid"))
ENTITY_TAG = Limit(64, ("{presentity_table}.etag", "{presentity_table}.prev_etag"))
# text columns: the product's own bounds.
CONTACT = Limit(1024)
ROUTE_SET = Limit(4096)

ALL: dict[str, Limit] = {
    "USER": USER,
    "DOMAIN": DOMAIN,
    "EVENT": EVENT,
    "EVENT_ID": EVENT_ID,
    "TAG": TAG,
    "CALL_ID": CALL_ID,
    "ENTITY_TAG": ENTITY_TAG,
    "CONTACT": CONTACT,
    "ROUTE_SET": ROUTE_SET,
}
