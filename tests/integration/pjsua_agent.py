"""One PJSIP user agent (pjsua2, PyPI's pjsua2-python) as a child process of the
interoperability test, so that PJSIP's process-wide library state and threads stay
out of pytest's process.

    python pjsua_agent.py --server 127.0.0.1:5060 --user alice [--buddy sip:bob@...]
        [--publish] [--mwi] [--log FILE]

It registers with the server (its built-in registrar), publishes its presence if
told to (AccountPresConfig.publishEnabled; PJSIP sends the first PUBLISH on the
first status command), subscribes to each --buddy and, with --mwi, to its own
mailbox's message-summary (AccountMwiConfig, RFC 3842). All PJSIP calls
run on the main thread (threadCnt 0), which polls libHandleEvents; commands come
on stdin, one per line: `online`, `busy`, `offline`, `quit`. Events go to stdout,
one per line:

    ready <sip port>
    reg <status code> <reason>
    buddy <uri> <online|offline|unknown> <subscription state> <status text>
    mwi <subscription state> <body lines joined by "|">
    bye
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading

import pjsua2 as pj


def say(*words: object) -> None:
    print(*words, flush=True)


class Account(pj.Account):
    def onRegState(self, prm):
        say("reg", prm.code, prm.reason.replace(" ", "_") or "-")

    def onMwiInfo(self, prm):
        # The NOTIFY as received: its body is the message summary (PJSIP does not
        # parse it for the application).
        _, _, body = prm.rdata.wholeMsg.partition("\r\n\r\n")
        lines = [line.strip() for line in body.splitlines() if line.strip()]
        say("mwi", prm.state, "|".join(lines).replace(" ", "") or "-")


class Buddy(pj.Buddy):
    def onBuddyState(self):
        info = self.getInfo()
        status = {
            pj.PJSUA_BUDDY_STATUS_ONLINE: "online",
            pj.PJSUA_BUDDY_STATUS_OFFLINE: "offline",
        }.get(info.presStatus.status, "unknown")
        text = info.presStatus.statusText.replace(" ", "_") or "-"
        say("buddy", info.uri, status, info.subStateName or "-", text)


def presence(command: str) -> pj.PresenceStatus:
    status = pj.PresenceStatus()
    if command == "offline":
        status.status = pj.PJSUA_BUDDY_STATUS_OFFLINE
    else:
        status.status = pj.PJSUA_BUDDY_STATUS_ONLINE
        if command == "busy":
            status.activity = pj.PJRPID_ACTIVITY_BUSY
            status.note = "Busy"
    return status


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True, help="host:port of sip-edge (UDP)")
    parser.add_argument("--user", required=True)
    parser.add_argument("--domain", default="127.0.0.1")
    parser.add_argument("--buddy", action="append", default=[])
    parser.add_argument("--publish", action="store_true")
    parser.add_argument("--mwi", action="store_true", help="subscribe to message-summary")
    parser.add_argument("--log", default="")
    parser.add_argument("--password", help="digest credentials for any realm")
    args = parser.parse_args()

    endpoint = pj.Endpoint()
    endpoint.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.uaConfig.userAgent = "pjsua2-interop-test"
    config.logConfig.consoleLevel = 0
    config.logConfig.level = 5 if args.log else 0
    config.logConfig.msgLogging = bool(args.log)
    config.logConfig.filename = args.log
    config.medConfig.noVad = True
    endpoint.libInit(config)
    transport = pj.TransportConfig()
    transport.port = 0
    transport.boundAddress = "127.0.0.1"
    transport_id = endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
    endpoint.libStart()
    endpoint.audDevManager().setNullDev()

    server = f"sip:{args.server}"
    account_config = pj.AccountConfig()
    account_config.idUri = f"sip:{args.user}@{args.domain}"
    account_config.regConfig.registrarUri = server
    account_config.sipConfig.proxies.append(f"{server};lr")
    account_config.presConfig.publishEnabled = args.publish
    account_config.mwiConfig.enabled = args.mwi
    if args.password:
        account_config.sipConfig.authCreds.append(
            pj.AuthCredInfo("digest", "*", args.user, 0, args.password)
        )
    account = Account()
    account.create(account_config)

    buddies = []
    for uri in args.buddy:
        buddy_config = pj.BuddyConfig()
        buddy_config.uri = uri
        buddy_config.subscribe = True
        buddy = Buddy()
        buddy.create(account, buddy_config)
        buddies.append(buddy)

    commands: queue.Queue[str] = queue.Queue()

    def read_commands() -> None:
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put("quit")

    threading.Thread(target=read_commands, daemon=True).start()
    say("ready", endpoint.transportGetInfo(transport_id).localName.split(":")[-1])

    while True:
        endpoint.libHandleEvents(20)
        try:
            command = commands.get_nowait()
        except queue.Empty:
            continue
        if command == "quit":
            break
        if command in ("online", "busy", "offline"):
            account.setOnlineStatus(presence(command))

    # Unpublish and unregister (the account), unsubscribe (the library, which also
    # waits a moment for the answers).
    account.shutdown()
    endpoint.libDestroy()
    say("bye")
    return 0


if __name__ == "__main__":
    sys.exit(main())
