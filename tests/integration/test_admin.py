"""The admin API (presence-store /admin) and presencectl on the real stack, with
privacy on (force_active=0): every endpoint and every command, against real SIP
publications and subscriptions."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from presence.sip.digest import ha1
from presence.sip.message import SipRequest

from .conftest import Stack, running_stack, wait_until
from .sip_client import SipClient
from .test_subscribe import WatcherDialog, publish_device

pytestmark = pytest.mark.integration

TOKEN = "admin-" + secrets.token_hex(8)
PIDF_NS = "urn:ietf:params:xml:ns:pidf"


@pytest.fixture(scope="module")
def admin_stack(test_database: str) -> Iterator[Stack]:
    with running_stack(
        test_database, PRESENCE_ADMIN_TOKEN=TOKEN, PRESENCE_FORCE_ACTIVE="0"
    ) as stack:
        yield stack


def api(
    stack: Stack, method: str, path: str, *, token: str | None = TOKEN, **query: Any
) -> tuple[int, dict[str, Any], dict[str, str]]:
    url = stack.http("presence-store", path)
    if query:
        url += "?" + urllib.parse.urlencode(query)
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def quoted(aor: str) -> str:
    return urllib.parse.quote(aor, safe="")


def ctl(
    stack: Stack, *args: str, token: str = TOKEN, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """presencectl as installed with the project (the venv's console script)."""
    script = Path(sys.executable).parent / "presencectl"
    env = {**os.environ, "PRESENCE_ADMIN_TOKEN": token}
    env["PRESENCECTL_URL"] = stack.http("presence-store", "")
    return subprocess.run(
        [str(script), *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def pidf(entity: str, tuple_id: str, basic: str) -> bytes:
    return (
        f'<?xml version="1.0"?><presence xmlns="{PIDF_NS}" entity="{entity}">'
        f'<tuple id="{tuple_id}"><status><basic>{basic}</basic></status></tuple></presence>'
    ).encode()


class Scene:
    """A domain of its own: alice (two devices) and bob publish; one watcher of alice."""

    def __init__(self, stack: Stack) -> None:
        self.domain = f"adm-{secrets.token_hex(3)}.example.com"
        self.alice = f"sip:alice@{self.domain}"
        self.bob = f"sip:bob@{self.domain}"
        self.watcher_uri = f"sip:w-{secrets.token_hex(3)}@example.com"
        self.etags = []
        for tuple_id in ("phone", "desk"):
            reply = publish_device(stack, self.alice, pidf(self.alice, tuple_id, "open"))
            assert reply.status == 200
            self.etags.append(reply.headers.get("SIP-ETag"))
        assert publish_device(stack, self.bob, pidf(self.bob, "b1", "closed")).status == 200
        self.dialog = WatcherDialog(
            SipClient(stack.sip, "udp"),
            self.alice,
            secrets.token_hex(8),
            secrets.token_hex(4),
            from_uri=self.watcher_uri,
        )
        assert self.dialog.subscribe().status == 200
        first = self.dialog.next_notify()
        assert first.headers.get("Subscription-State").startswith("pending")
        self.subscription = self.dialog.to_tag

    def close(self) -> None:
        self.dialog.client.close()


@pytest.fixture
def scene(admin_stack: Stack) -> Iterator[Scene]:
    made = Scene(admin_stack)
    yield made
    made.close()


def test_the_token_is_required_and_openapi_describes_the_api(admin_stack: Stack) -> None:
    status, body, headers = api(admin_stack, "GET", "/admin/presentities", token=None)
    assert status == 401 and "admin token" in body["error"]
    assert headers.get("www-authenticate", headers.get("WWW-Authenticate")) == "Bearer"
    assert api(admin_stack, "GET", "/admin/presentities", token="wrong")[0] == 401
    with urllib.request.urlopen(admin_stack.http("presence-store", "/openapi.json")) as response:
        spec = json.loads(response.read())
    paths = set(spec["paths"])
    assert {
        "/admin/presentities",
        "/admin/presentities/{aor}",
        "/admin/presentities/{aor}/watchers",
        "/admin/watchers/{aor}/subscriptions",
        "/admin/presentities/{aor}/refresh",
        "/admin/presentities/{aor}/update-watchers",
        "/admin/cleanup",
        "/admin/subscriptions/{subscription}/terminate",
    } <= paths
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_bad_parameters_get_a_json_error_naming_the_field(admin_stack: Stack) -> None:
    cases = [
        ("GET", "/admin/presentities", {"limit": 0}, "limit"),
        ("GET", "/admin/presentities", {"limit": "many"}, "limit"),
        ("GET", "/admin/presentities", {"offset": -1}, "offset"),
        ("GET", "/admin/presentities", {"event": "bogus"}, "event"),
        ("GET", "/admin/presentities/" + quoted("sip:@example.com"), {}, "aor"),
        ("GET", "/admin/presentities/" + quoted("sip:a@b.example.com") + "/watchers",
         {"event": "x"}, "event"),
        ("POST", "/admin/subscriptions/abc/terminate", {"reason": "bored"}, "reason"),
    ]  # fmt: skip
    for method, path, query, field in cases:
        status, body, _ = api(admin_stack, method, path, **query)
        assert status == 400, (path, query, body)
        assert body["field"] == field and field in body["error"], body
    status, body, _ = api(admin_stack, "POST", "/admin/subscriptions/nosuch/terminate")
    assert (status, body["field"]) == (404, "subscription")
    status, body, _ = api(admin_stack, "GET", "/admin/presentities/nobody@nowhere.example.com")
    assert (status, body["field"]) == (404, "aor")


def test_list_show_watchers_and_subscriptions(admin_stack: Stack, scene: Scene) -> None:
    status, listing, headers = api(admin_stack, "GET", "/admin/presentities", domain=scene.domain)
    assert status == 200 and headers["x-correlation-id"].startswith("admin-")
    assert [(i["presentity"], i["publications"], i["watchers"]) for i in listing["items"]] == [
        (scene.alice, 2, 1),
        (scene.bob, 1, 0),
    ]
    assert listing["next_offset"] is None
    first = api(admin_stack, "GET", "/admin/presentities", domain=scene.domain, limit=1)[1]
    assert [i["presentity"] for i in first["items"]] == [scene.alice]
    assert first["next_offset"] == 1
    second = api(admin_stack, "GET", "/admin/presentities", domain=scene.domain, limit=1, offset=1)
    assert [i["presentity"] for i in second[1]["items"]] == [scene.bob]
    assert second[1]["next_offset"] is None
    assert (
        api(admin_stack, "GET", "/admin/presentities", domain=scene.domain, event="presence.winfo")[
            1
        ]["items"]
        == []
    )

    status, shown, _ = api(admin_stack, "GET", "/admin/presentities/" + quoted(scene.alice))
    assert status == 200 and shown["watchers"] == 1
    assert [p["etag"] for p in shown["publications"]] == scene.etags
    assert [p["device"] for p in shown["publications"]] == [["id:phone"], ["id:desk"]]
    assert all(0 < p["expires_in"] <= 3601 for p in shown["publications"])
    assert 'id="phone"' in shown["document"] and 'id="desk"' in shown["document"]
    # "user@domain" is accepted as well as the SIP URI.
    assert api(admin_stack, "GET", "/admin/presentities/" + quoted(scene.bob[4:]))[0] == 200

    status, watchers, _ = api(
        admin_stack, "GET", f"/admin/presentities/{quoted(scene.alice)}/watchers"
    )
    assert status == 200
    (item,) = watchers["items"]
    assert item["subscription"] == scene.subscription
    assert (item["watcher"], item["status"], item["notifies"]) == (scene.watcher_uri, "pending", 1)
    assert watchers["decisions"] == [
        {"watcher": scene.watcher_uri, "status": "pending", "reason": None,
         "since": watchers["decisions"][0]["since"]}
    ]  # fmt: skip

    status, subscriptions, _ = api(
        admin_stack, "GET", f"/admin/watchers/{quoted(scene.watcher_uri)}/subscriptions"
    )
    assert status == 200
    assert [(s["subscription"], s["presentity"], s["event"], s["status"])
            for s in subscriptions["items"]] == [
        (scene.subscription, scene.alice, "presence", "pending")
    ]  # fmt: skip


def test_refresh_sends_the_current_state_again(admin_stack: Stack, scene: Scene) -> None:
    status, body, _ = api(admin_stack, "POST", f"/admin/presentities/{quoted(scene.alice)}/refresh")
    assert status == 200 and body["watchers"] == 1
    correlation_id = body["correlation_id"]
    notify = scene.dialog.next_notify()
    assert notify.headers.get("CSeq") == "2 NOTIFY"
    assert notify.headers.get("Subscription-State").startswith("pending")
    # The operator's request is followed through the notifier's and the edge's logs.
    wait_until(
        lambda: all(
            correlation_id in admin_stack.processes[name].log()
            for name in ("presence-store", "notifier", "sip-edge")
        ),
        10,
        "the refresh's correlation id in every service's log",
    )


async def test_update_watchers_applies_rules_changed_behind_the_servers_back(
    admin_stack: Stack, scene: Scene
) -> None:
    rules = f"""<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy"
            xmlns:pr="urn:ietf:params:xml:ns:pres-rules">
  <cr:rule id="w"><cr:conditions><cr:identity><cr:one id="{scene.watcher_uri}"/>
  </cr:identity></cr:conditions>
  <cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>
  <cr:transformations><pr:provide-services><pr:all-services/></pr:provide-services>
  </cr:transformations></cr:rule>
</cr:ruleset>"""
    connection = await asyncpg.connect(admin_stack.db_url)
    try:
        await connection.execute(
            "INSERT INTO xcap_xml (username, domain, xcap, doc_type) VALUES ($1, $2, $3, 2)",
            "alice",
            scene.domain,
            rules,
        )
        path = f"/admin/presentities/{quoted(scene.alice)}/update-watchers"
        status, body, _ = api(admin_stack, "POST", path)
        assert status == 200
        assert body["changed"] == [
            {"subscription": scene.subscription, "watcher": scene.watcher_uri,
             "from": "pending", "to": "active", "event": "approved"}
        ]  # fmt: skip
        notify: SipRequest = scene.dialog.next_notify()
        assert notify.headers.get("Subscription-State").startswith("active")
        assert b'id="phone"' in notify.body and b'id="desk"' in notify.body
        status_now = await connection.fetchval(
            "SELECT status FROM active_watchers WHERE to_tag = $1", scene.subscription
        )
        assert status_now == "active"
        # Nothing left to change the second time.
        assert api(admin_stack, "POST", path)[1]["changed"] == []
    finally:
        await connection.close()


async def test_terminate_ends_the_subscription_with_a_final_notify(
    admin_stack: Stack, scene: Scene
) -> None:
    path = f"/admin/subscriptions/{scene.subscription}/terminate"
    status, body, _ = api(admin_stack, "POST", path, reason="noresource")
    assert status == 200
    assert (body["presentity"], body["watcher"]) == (scene.alice, scene.watcher_uri)
    final = scene.dialog.next_notify()
    assert final.headers.get("Subscription-State") == "terminated;reason=noresource"
    connection = await asyncpg.connect(admin_stack.db_url)
    try:
        deadline = time.monotonic() + 10
        while await connection.fetchval(
            "SELECT count(*) FROM active_watchers WHERE to_tag = $1", scene.subscription
        ):
            assert time.monotonic() < deadline, "the ended subscription was not deleted"
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
    assert api(admin_stack, "POST", path)[0] in (404, 409)


async def test_cleanup_now(admin_stack: Stack) -> None:
    user = f"stale-{secrets.token_hex(3)}"
    connection = await asyncpg.connect(admin_stack.db_url)
    try:
        await connection.execute(
            """INSERT INTO presentity (username, domain, event, etag, expires,
                                       received_time, body)
               VALUES ($1, 'example.com', 'presence', 'e1', $2, $2, '<presence/>')""",
            user,
            int(time.time()) - 10,
        )
        status, body, _ = api(admin_stack, "POST", "/admin/cleanup")
        assert status == 200
        assert body["removed"]["publications"] >= 1
        assert body["correlation_id"].startswith("admin-")
        assert not await connection.fetchval(
            "SELECT count(*) FROM presentity WHERE username = $1", user
        )
    finally:
        await connection.close()


def test_presencectl_session(admin_stack: Stack, scene: Scene) -> None:
    listing = ctl(admin_stack, "presentities", "--domain", scene.domain)
    assert listing.returncode == 0, listing.stderr
    header, alice, bob = listing.stdout.splitlines()
    assert header.split() == ["PRESENTITY", "EVENT", "PUBLICATIONS", "WATCHERS", "EXPIRES", "IN"]
    assert alice.split()[:4] == [scene.alice, "presence", "2", "1"]
    assert bob.split()[:4] == [scene.bob, "presence", "1", "0"]
    as_json = json.loads(
        ctl(admin_stack, "--json", "presentities", "--domain", scene.domain).stdout
    )
    assert [i["presentity"] for i in as_json] == [scene.alice, scene.bob]
    paged = ctl(admin_stack, "--json", "presentities", "--domain", scene.domain, "--limit", "1",
                "--all")  # fmt: skip
    assert [i["presentity"] for i in json.loads(paged.stdout)] == [scene.alice, scene.bob]

    shown = ctl(admin_stack, "show", scene.alice)
    assert shown.returncode == 0
    assert f"presentity  {scene.alice}" in shown.stdout
    assert scene.etags[0] in shown.stdout and "phone" in shown.stdout
    assert "<presence" in shown.stdout and 'id="desk"' in shown.stdout

    watchers = ctl(admin_stack, "watchers", scene.alice)
    assert scene.subscription in watchers.stdout and "pending" in watchers.stdout
    assert "authorization decisions:" in watchers.stdout
    subscriptions = ctl(admin_stack, "subscriptions", scene.watcher_uri)
    assert scene.subscription in subscriptions.stdout and scene.alice in subscriptions.stdout

    refresh = ctl(admin_stack, "refresh", "--domain", scene.domain)
    assert refresh.returncode == 0, refresh.stderr
    progress = refresh.stderr.splitlines()
    assert "refresh: 1/2 presentities, 1 watchers" in progress
    assert "refresh: 2/2 presentities, 1 watchers" in progress
    assert progress[-1].startswith("refresh: 2 presentities, 1 watchers notified in ")
    assert scene.dialog.next_notify().headers.get("CSeq") == "2 NOTIFY"

    update = ctl(admin_stack, "--json", "update-watchers", scene.alice)
    assert update.returncode == 0 and json.loads(update.stdout)[0]["changed"] == []
    assert "update-watchers: 1/1" in update.stderr
    # Re-judged, the watchers are notified of the state as the rules now show it.
    assert scene.dialog.next_notify().headers.get("CSeq") == "3 NOTIFY"

    cleanup = ctl(admin_stack, "cleanup")
    assert cleanup.returncode == 0 and cleanup.stdout.splitlines()[0].split() == [
        "REMOVED",
        "COUNT",
    ]
    assert any(line.split()[0] == "publications" for line in cleanup.stdout.splitlines())

    terminate = ctl(admin_stack, "terminate", scene.subscription, "--reason", "rejected")
    assert terminate.returncode == 0, terminate.stderr
    assert terminate.stdout.startswith(f"terminated {scene.subscription}: {scene.watcher_uri}")
    final = scene.dialog.next_notify()
    assert final.headers.get("Subscription-State") == "terminated;reason=rejected"

    refused = ctl(admin_stack, "presentities", token="wrong")
    assert refused.returncode == 1 and "admin token" in refused.stderr
    bad = ctl(admin_stack, "show", scene.alice, "--event", "nope")
    assert bad.returncode == 1 and bad.stderr.rstrip().endswith("[event]")
    usage = ctl(admin_stack, "refresh")
    assert usage.returncode == 1 and "name at least one presentity" in usage.stderr
    module = subprocess.run(
        [sys.executable, "-m", "presencectl", "--help"], capture_output=True, text=True
    )
    assert module.returncode == 0 and "update-watchers" in module.stdout


def test_sip_users_through_the_api_and_presencectl(admin_stack: Stack) -> None:
    """Credentials of SIP digest authentication: the table keeps HA1s, never the password."""
    domain = f"users-{secrets.token_hex(3)}.example.com"
    aor = f"sip:carol@{domain}"
    added = ctl(admin_stack, "user-add", aor, "--password-stdin", stdin="s3cret\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout == f"added {aor}\n"

    async def stored() -> asyncpg.Record | None:
        connection = await asyncpg.connect(admin_stack.db_url)
        try:
            return await connection.fetchrow(
                "SELECT * FROM credentials WHERE username = 'carol' AND domain = $1", domain
            )
        finally:
            await connection.close()

    row = asyncio.run(stored())
    assert row is not None
    assert row["ha1_md5"] == ha1("MD5", "carol", domain, "s3cret")
    assert row["ha1_sha256"] == ha1("SHA-256", "carol", domain, "s3cret")
    assert "s3cret" not in " ".join(str(value) for value in row.values())

    listing = ctl(admin_stack, "users", "--domain", domain)
    assert listing.returncode == 0 and listing.stdout.splitlines()[1].split()[0] == aor
    status, body, _ = api(admin_stack, "GET", "/admin/users", domain=domain)
    assert status == 200 and [u["user"] for u in body["items"]] == [aor]
    assert ctl(admin_stack, "user-remove", aor).stdout == f"removed {aor}\n"
    again = ctl(admin_stack, "user-remove", aor)
    assert again.returncode == 1 and again.stderr.rstrip().endswith("[aor]")
    status, body, _ = api(admin_stack, "DELETE", f"/admin/users/{quoted('not an aor')}")
    assert status == 400 and body["field"] == "aor"
    assert asyncio.run(stored()) is None


def test_presencectl_show_lists_each_event_package(admin_stack: Stack, scene: Scene) -> None:
    line = scene.alice
    dialogs = (
        '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" '
        f'entity="{line}"><dialog id="call-7"><state>confirmed</state></dialog></dialog-info>'
    ).encode()
    client = SipClient(admin_stack.sip, "udp")
    try:
        for event, content_type, body in (
            ("dialog", "application/dialog-info+xml", dialogs),
            ("message-summary", "application/simple-message-summary",
             b"Messages-Waiting: yes\r\nVoice-Message: 3/4\r\n"),
        ):  # fmt: skip
            headers = [("Event", event), ("Content-Type", content_type)]
            reply = client.transact(client.request("PUBLISH", line, headers, body))
            assert reply.status == 200, (event, reply.reason)
    finally:
        client.close()

    shown = ctl(admin_stack, "show", line)
    assert shown.returncode == 0, shown.stderr
    events = [row.split()[1] for row in shown.stdout.splitlines() if row.startswith("event ")]
    assert events == ["presence", "dialog", "message-summary"]
    assert 'id="call-7"' in shown.stdout and "Voice-Message: 3/4" in shown.stdout
    as_json = json.loads(ctl(admin_stack, "--json", "show", line).stdout)
    assert [(s["event"], s["watchers"], len(s["publications"])) for s in as_json] == [
        ("presence", 1, 2),
        ("dialog", 0, 1),
        ("message-summary", 0, 1),
    ]
    one = json.loads(ctl(admin_stack, "--json", "show", line, "--event", "dialog").stdout)
    assert one["event"] == "dialog"
    nobody = ctl(admin_stack, "show", f"sip:nobody@{scene.domain}")
    assert nobody.returncode == 1 and "no publication or watcher" in nobody.stderr
