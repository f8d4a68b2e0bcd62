"""The commands of presencectl (see the package docstring): argparse, the admin API
over HTTP (urllib, no dependency), tables or JSON on stdout, errors and progress on
stderr. Exit status: 0 done, 1 the API refused or could not be reached, 2 usage."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from presence.packages.registry import PACKAGES
from presence.runtime.first_start import with_stored_values

DEFAULT_URL = "http://127.0.0.1:8080"
PAGE = 1000


class ApiError(Exception):
    def __init__(self, message: str, field: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message, self.field, self.status = message, field, status


class AdminClient:
    def __init__(self, url: str, token: str, timeout: float) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        params = {k: v for k, v in query.items() if v is not None}
        full = self.url + "/admin" + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = json.dumps(body).encode() if body is not None else None
        if data is None and method in ("POST", "PUT"):
            data = b""
        request = urllib.request.Request(full, method=method, data=data)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                body = json.loads(error.read())
            except ValueError:
                body = {}
            message = body.get("error") or f"HTTP {error.code} {error.reason}"
            raise ApiError(message, body.get("field"), error.code) from None
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise ApiError(f"cannot reach the admin API at {self.url}: {reason}") from None

    def pages(self, path: str, *, everything: bool, limit: int, **query: Any) -> Iterator[Any]:
        """The pages of a listing: the first, or all of them (`everything`)."""
        offset = 0
        while True:
            page = self.call("GET", path, limit=limit, offset=offset, **query)
            yield page
            if not everything or page.get("next_offset") is None:
                return
            offset = page["next_offset"]


def aor_path(aor: str) -> str:
    return urllib.parse.quote(aor, safe="")


# --- output ------------------------------------------------------------------------


def duration(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    if seconds <= 0:
        return "expired"
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], out: IO[str]) -> None:
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


class Progress:
    """`done/total` on stderr: rewritten in place on a terminal, else a line every
    10% (and at the end), so a log of a long run stays short."""

    def __init__(self, what: str, total: int, stream: IO[str] | None = None) -> None:
        self.what, self.total, self.done = what, total, 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last_tenth = -1

    def step(self, note: str = "") -> None:
        self.done += 1
        tenth = self.done * 10 // max(self.total, 1)
        line = f"{self.what}: {self.done}/{self.total}{note}"
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            if self.done == self.total:
                self.stream.write("\n")
        elif tenth != self._last_tenth or self.done == self.total:
            self.stream.write(line + "\n")
        self._last_tenth = tenth
        self.stream.flush()

    def finish(self, summary: str) -> None:
        took = time.monotonic() - self.started
        self.stream.write(f"{self.what}: {summary} in {took:.1f}s\n")
        self.stream.flush()


# --- commands ----------------------------------------------------------------------


def cmd_presentities(client: AdminClient, args: argparse.Namespace, out: IO[str]) -> Any:
    items: list[dict[str, Any]] = []
    for page in client.pages(
        "/presentities", everything=args.all, limit=args.limit, domain=args.domain, event=args.event
    ):
        items += page["items"]
    if args.json:
        return items
    table(
        [
            (
                i["presentity"],
                i["event"],
                i["publications"],
                i["watchers"],
                duration(i["expires_in"]),
            )
            for i in items
        ],
        ["PRESENTITY", "EVENT", "PUBLICATIONS", "WATCHERS", "EXPIRES IN"],
        out,
    )
    if not args.all and len(items) == args.limit:
        out.write(f"(first {args.limit}; --all for every page)\n")
    return None


def cmd_show(client: AdminClient, args: argparse.Namespace, out: IO[str]) -> Any:
    """One event package's publications, watchers and document; without --event,
    every package the presentity has publications or watchers of."""
    path = f"/presentities/{aor_path(args.aor)}"
    if args.event is not None:
        shown = [client.call("GET", path, event=args.event)]
    else:
        shown = []
        for event in PACKAGES:
            try:
                shown.append(client.call("GET", path, event=event))
            except ApiError as error:
                if error.status != 404:
                    raise
        if not shown:
            raise ApiError(f"{args.aor} has no publication or watcher", "aor", 404)
    if args.json:
        return shown[0] if args.event is not None else shown
    for number, section in enumerate(shown):
        if number:
            out.write("\n")
        out.write(f"presentity  {section['presentity']}\nevent       {section['event']}\n")
        out.write(f"watchers    {section['watchers']}\n\n")
        table(
            [
                (p["etag"], duration(p["expires_in"]), " ".join(p["device"]) or "-")
                for p in section["publications"]
            ],
            ["ETAG", "EXPIRES IN", "DEVICE"],
            out,
        )
        out.write("\n" + section["document"].rstrip() + "\n")
    return None


def cmd_watchers(client: AdminClient, args: argparse.Namespace, out: IO[str]) -> Any:
    items: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    for page in client.pages(
        f"/presentities/{aor_path(args.aor)}/watchers",
        everything=args.all,
        limit=args.limit,
        event=args.event,
    ):
        items += page["items"]
        decisions = page["decisions"]
    if args.json:
        return {"items": items, "decisions": decisions}
    table(
        [
            (w["subscription"], w["watcher"], w["status"], w["reason"], duration(w["expires_in"]),
             w["notifies"], w["edge"])
            for w in items
        ],
        ["SUBSCRIPTION", "WATCHER", "STATUS", "REASON", "EXPIRES IN", "NOTIFIES", "EDGE"],
        out,
    )  # fmt: skip
    if decisions:
        out.write("\nauthorization decisions:\n")
        table(
            [(d["watcher"], d["status"], d["reason"]) for d in decisions],
            ["WATCHER", "STATUS", "REASON"],
            out,
        )
    return None


def cmd_subscriptions(client: AdminClient, args: argparse.Namespace, out: IO[str]) -> Any:
    items: list[dict[str, Any]] = []
    for page in client.pages(
        f"/watchers/{aor_path(args.aor)}/subscriptions", everything=args.all, limit=args.limit
    ):
        items += page["items"]
    if args.json:
        return items
    table(
        [
            (s["subscription"], s["presentity"], s["event"], s["status"], s["reason"],
             duration(s["expires_in"]))
            for s in items
        ],
        ["SUBSCRIPTION", "PRESENTITY", "EVENT", "STATUS", "REASON", "EXPIRES IN"],
        out,
    )  # fmt: skip
    return None


def _targets(client: AdminClient, args: argparse.Namespace) -> list[str]:
    """The presentities a bulk command works on: those named, or every one with a
    publication (in --domain, or --every domain)."""
    if args.aors:
        if args.domain or args.every:
            raise ApiError("name presentities, or use --domain / --every, not both", "aors")
        return list(dict.fromkeys(args.aors))
    if not (args.domain or args.every):
        raise ApiError("name at least one presentity, or use --domain D or --every", "aors")
    found: list[str] = []
    for page in client.pages(
        "/presentities", everything=True, limit=PAGE, domain=args.domain, event=args.event
    ):
        found += [item["presentity"] for item in page["items"]]
    return list(dict.fromkeys(found))


def cmd_refresh(client: AdminClient, args: argparse.Namespace, out: IO[str]) -> Any:
    targets = _targets(client, args)
    progress = Progress("refresh", len(targets))
    results = []
    watchers = 0
    for aor in targets:
        result = client.call("POST", f"/presentities/{aor_path(aor)}/refresh", event=args.event)
        results.append(result)
        watchers += result["watchers"]
        progress.step(f" presentities, {watchers} watchers")
    progress.finish(f"{len(targets)} presentities, {watchers} watchers notified")
    if args.json:
        return results
    table(
        [(r["presentity"], r["event"], r["watchers"], r["correlation_id"]) for r in results],
        ["PRESENTITY", "EVENT", "WATCHERS", "CORRELATION ID"],
        out,
    )
    return None


def cmd_update_watchers(client: AdminClient, args: argparse.Namespace, out: IO[str]) -> Any:
    targets = _targets(client, args)
    progress = Progress("update-watchers", len(targets))
    results = []
    changed = 0
    for aor in targets:
        result = client.call("POST", f"/presentities/{aor_path(aor)}/update-watchers")
        results.append(result)
        changed += len(result["changed"])
        progress.step(f" presentities, {changed} subscriptions changed")
    progress.finish(f"{len(targets)} presentities re-judged, {changed} subscriptions changed")
    if args.json:
        return results
    if not changed:
        out.write("no subscription changed state\n")
        return None
    table(
        [
            (r["presentity"], c["subscription"], c["watcher"], c["from"], c["to"])
            for r in results
            for c in r["changed"]
        ],
        ["PRESENTITY", "SUBSCRIPTION", "WATCHER", "WAS", "NOW"],
        out,
    )
    return None


def cmd_cleanup(client: AdminClient, args: argparse.Namespace, out: IO[str]) -> Any:
    result = client.call("POST", "/cleanup")
    if args.json:
        return result
    table(sorted(result["removed"].items()), ["REMOVED", "COUNT"], out)
    return None


def cmd_terminate(client: AdminClient, args: argparse.Namespace, out: IO[str]) -> Any:
    path = f"/subscriptions/{urllib.parse.quote(args.subscription, safe='')}/terminate"
    result = client.call("POST", path, reason=args.reason)
    if args.json:
        return result
    out.write(
        f"terminated {result['subscription']}: {result['watcher']} watching "
        f"{result['presentity']} ({result['event']}), reason {result['reason']}\n"
    )
    return None


def cmd_users(client: AdminClient, args: argparse.Namespace, out: IO[str]) -> Any:
    items: list[dict[str, Any]] = []
    for page in client.pages("/users", everything=args.all, limit=args.limit, domain=args.domain):
        items += page["items"]
    if args.json:
        return items
    table(
        [(u["user"], time.strftime("%Y-%m-%d %H:%M", time.gmtime(u["updated_at"]))) for u in items],
        ["USER", "PASSWORD SET (UTC)"],
        out,
    )
    return None


def cmd_user_add(client: AdminClient, args: argparse.Namespace, out: IO[str]) -> Any:
    """Add a SIP user or set a password: asked on the terminal (twice), or one line
    on stdin with --password-stdin; never on the command line, where ps shows it."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.aor}: ")
        if getpass.getpass("again: ") != password:
            raise ApiError("the passwords differ", "password")
    if not password:
        raise ApiError("an empty password is refused", "password")
    result = client.call("PUT", f"/users/{aor_path(args.aor)}", {"password": password})
    if args.json:
        return result
    verb = "added" if result["created"] else "changed the password of"
    out.write(f"{verb} {result['user']}\n")
    return None


def cmd_user_remove(client: AdminClient, args: argparse.Namespace, out: IO[str]) -> Any:
    result = client.call("DELETE", f"/users/{aor_path(args.aor)}")
    if args.json:
        return result
    out.write(f"removed {result['user']}\n")
    return None


def cmd_dead_letters(client: AdminClient, args: argparse.Namespace, out: IO[str]) -> Any:
    items: list[dict[str, Any]] = []
    for page in client.pages("/dead-letters", everything=args.all, limit=args.limit):
        items += page["items"]
    if args.json:
        return items
    if not items:
        out.write("no dead letters\n")
        return None
    table(
        [
            (i["position"], i.get("failed_at_utc"), i.get("service"),
             f"{i.get('topic')}[{i.get('partition')}]@{i.get('offset')}",
             i.get("key"), i.get("attempts"), _cut(i.get("error") or "", 100))
            for i in items
        ],
        ["#", "FAILED AT (UTC)", "SERVICE", "RECORD", "KEY", "ATTEMPTS", "ERROR"],
        out,
    )  # fmt: skip
    if not args.all and len(items) == args.limit:
        out.write(f"(first {args.limit}; --all for every page)\n")
    return None


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


Command = Callable[[AdminClient, argparse.Namespace, IO[str]], Any]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="presencectl", description="Operate a presence server through its admin API."
    )
    top.add_argument(
        "--url",
        default=os.environ.get("PRESENCECTL_URL", DEFAULT_URL),
        help="presence-store's HTTP address (PRESENCECTL_URL; default %(default)s)",
    )
    # Inside a compose container the token may be the one made at the first start.
    stored = os.environ.get("PRESENCE_SECRETS_DIR")
    environ = with_stored_values(os.environ, Path(stored)) if stored else os.environ
    top.add_argument(
        "--token",
        default=environ.get("PRESENCE_ADMIN_TOKEN", ""),
        help="the admin token (default: PRESENCE_ADMIN_TOKEN, or PRESENCE_SECRETS_DIR's)",
    )
    top.add_argument("--json", action="store_true", help="JSON on stdout instead of tables")
    top.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Command, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(run=run)
        return sub

    def paged(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--limit", type=int, default=100, help="rows per page (1-1000)")
        sub.add_argument("--all", action="store_true", help="every page, not just the first")

    sub = command("presentities", cmd_presentities, "list presentities with publications")
    sub.add_argument("--domain")
    sub.add_argument("--event")
    paged(sub)
    sub = command("show", cmd_show, "one presentity: publications, watchers and document")
    sub.add_argument("aor", help="sip:user@domain")
    sub.add_argument("--event", help="one event package (default: each one it has)")
    sub = command("watchers", cmd_watchers, "the subscriptions to a presentity")
    sub.add_argument("aor")
    sub.add_argument("--event", default="presence")
    paged(sub)
    sub = command("subscriptions", cmd_subscriptions, "what one watcher subscribes to")
    sub.add_argument("aor", help="the watcher, sip:user@domain")
    paged(sub)
    for name, run, text in (
        ("refresh", cmd_refresh, "re-send the current state to presentities' watchers"),
        ("update-watchers", cmd_update_watchers, "re-judge subscriptions by the pres-rules"),
    ):
        sub = command(name, run, text)
        sub.add_argument("aors", nargs="*", metavar="AOR")
        sub.add_argument("--domain", help="every presentity of this domain")
        sub.add_argument("--every", action="store_true", help="every presentity")
        sub.add_argument("--event", default="presence")
    command("cleanup", cmd_cleanup, "remove what expired now (the clean_period timer)")
    sub = command("terminate", cmd_terminate, "end a subscription with a final NOTIFY")
    sub.add_argument("subscription", help="its id (the dialog's To-tag)")
    sub.add_argument("--reason", default="deactivated")
    sub = command("users", cmd_users, "the SIP digest users (credentials)")
    sub.add_argument("--domain")
    paged(sub)
    sub = command("user-add", cmd_user_add, "add a SIP user, or set their password")
    sub.add_argument("aor", help="sip:user@domain (the realm is the domain)")
    sub.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    sub = command("user-remove", cmd_user_remove, "remove a SIP user")
    sub.add_argument("aor")
    sub = command("dead-letters", cmd_dead_letters, "records the services gave up on, oldest first")
    paged(sub)
    return top


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    args = parser().parse_args(argv)
    client = AdminClient(args.url, args.token, args.timeout)
    try:
        result = args.run(client, args, out)
    except ApiError as error:
        field = f" [{error.field}]" if error.field else ""
        sys.stderr.write(f"presencectl: {error.message}{field}\n")
        return 1
    if args.json:
        out.write(json.dumps(result, indent=2) + "\n")
    return 0


def run() -> None:
    sys.exit(main())
