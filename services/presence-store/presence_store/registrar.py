"""A minimal registrar (RFC 3261 §10.3): bindings of contacts to an address-of-record.

It exists because some phones (linphone) publish presence only after a
successful REGISTER; it routes nothing. PRESENCE_REGISTRAR=0 turns it off (405).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from presence.bus.events import RegisterRequest
from presence.packages.registry import ExpiryPolicy
from presence.runtime import metrics
from presence.settings import Settings
from presence.sip.answers import Answer
from presence.subscriptions.expiry import expires_at, seconds_left
from presence.tables import location
from presence_store.outcome import Outcome

WILDCARD = "*"
# Kamailio's registrar answers its max_contacts the same way, which phones know.
TOO_MANY_CONTACTS = Answer(503, "Too Many Registered Contacts")


@dataclass(frozen=True)
class Binding:
    contact: str
    expires: int  # granted seconds; 0 removes
    q: float | None


def plan_bindings(request: RegisterRequest, expiry: ExpiryPolicy) -> list[Binding] | Answer:
    """Validate the contacts and grant each its expiry (§10.3 steps 6 and 7)."""
    uris = [uri for uri, _, _ in request.contacts]
    if WILDCARD in uris:
        # §10.3 step 6: "*" only alone, and only with Expires: 0.
        if len(uris) > 1 or request.expires != 0:
            return Answer(400, "Wildcard Contact Needs Expires 0 Alone")
        return [Binding(WILDCARD, 0, None)]
    bindings = []
    for uri, contact_expires, q in request.contacts:
        if contact_expires is not None:
            expires = contact_expires
        elif request.expires is not None:
            expires = request.expires
        else:
            expires = expiry.default
        if 0 < expires < expiry.min:
            return Answer(423, "Interval Too Brief", [("Min-Expires", str(expiry.min))])
        bindings.append(Binding(uri, min(expires, expiry.max), q))
    return bindings


def bindings_after(live: Iterable[str], plan: list[Binding]) -> int:
    """How many live bindings the address-of-record has once `plan` is applied."""
    contacts = set(live)
    for binding in plan:
        if binding.expires == 0:
            contacts.discard(binding.contact)
        else:
            contacts.add(binding.contact)
    return len(contacts)


def over_contact_cap(live: Iterable[str], plan: list[Binding], max_contacts: int) -> bool:
    """Whether `plan` adds bindings beyond `max_contacts` (PRESENCE_MAX_CONTACTS). A
    request that does not add any (a refresh, a removal) passes even when a lowered cap
    is already passed."""
    live = set(live)
    after = bindings_after(live, plan)
    return after > max_contacts and after > len(live)


async def apply_register(
    connection: asyncpg.Connection, request: RegisterRequest, settings: Settings, now: int
) -> Outcome:
    plan = plan_bindings(request, settings.expiry_policy)
    if isinstance(plan, Answer):
        return Outcome(plan)
    aor = (request.username, request.domain)
    existing = {row["contact"]: row for row in await location.bindings(connection, *aor)}
    if plan and plan[0].contact == WILDCARD:
        plan = [Binding(contact, 0, None) for contact in existing]
    for binding in plan:
        row = existing.get(binding.contact)
        # §10.3 step 7: the same Call-ID with a CSeq that is not higher is an old
        # request arriving late; the whole update is aborted.
        if row is not None and row["callid"] == request.call_id and row["cseq"] >= request.cseq:
            return Outcome(Answer(500, "Stale CSeq For Binding"))
    live = [contact for contact, row in existing.items() if row["expires"] > now]
    if over_contact_cap(live, plan, settings.max_contacts):
        metrics.CAP_REFUSALS.labels("contacts").inc()
        return Outcome(TOO_MANY_CONTACTS)
    for binding in plan:
        if binding.expires == 0:
            await location.remove_binding(connection, *aor, binding.contact)
            continue
        await location.store_binding(
            connection,
            *aor,
            binding.contact,
            expires_at(now, binding.expires),
            request.call_id,
            request.cseq,
            binding.q,
            request.flow,
            # What ties this UA's PUBLISHes (over the same flow) to its device.
            request.instances.get(binding.contact),
        )
    current = await location.live_bindings(connection, *aor, now)
    # §10.3 step 8: the 200 lists every current binding with its remaining time.
    headers = [
        ("Contact", f"<{row['contact']}>;expires={seconds_left(row['expires'], now)}")
        for row in current
    ]
    return Outcome(Answer(200, "OK", headers))
