"""One PJSIP user agent (pjsua2, PyPI's pjsua2-python) as a child process of the
interoperability test, so that PJSIP's process-wide library state and threads stay
out of pytest's process.

    python pjsua_agent.py --server 127.0.0.1:5060 --user alice [--buddy sip:bob@...]
        [--publish] [--mwi] [--dialog-buddy sip:carol@...] [--log FILE] [--tls-ca FILE]

With --tls-ca it speaks SIP over TLS only (--server is then the TLS port): a TLS
transport that verifies the server's certificate against that CA file, a registrar
and Route of `;transport=tls`, so every request and NOTIFY goes over TLS.

It registers with the server (its built-in registrar), publishes its presence if
told to (AccountPresConfig.publishEnabled; PJSIP sends the first PUBLISH on the
first status command), subscribes to each --buddy and, with --mwi, to its own
mailbox's message-summary (AccountMwiConfig, RFC 3842) and to each --dialog-buddy's
dialog state (RFC 4235; PJSIP 2.13+ has it in PJSUA-LIB, which pjsua2-python's
bindings do not expose: it is called through ctypes). All PJSIP calls
run on the main thread (threadCnt 0), which polls libHandleEvents; commands come
on stdin, one per line: `online`, `busy`, `offline`, `quit`. Events go to stdout,
one per line:

    ready <sip port>
    reg <status code> <reason>
    buddy <uri> <online|offline|unknown> <subscription state> <status text>
    mwi <subscription state> <body lines joined by "|">
    dialog <uri> <subscription state> <state of its first dialog, or idle>
    bye
"""

from __future__ import annotations

import argparse
import ctypes
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


class PjStr(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_char_p), ("slen", ctypes.c_ssize_t)]

    def text(self) -> str:
        return (self.ptr or b"")[: self.slen].decode() if self.slen > 0 else ""


# The pj_str_t fields of pjsua_buddy_dlg_event_info, in order.
_DIALOG_STRINGS = (
    "uri", "dialog_id", "dialog_info_state", "dialog_info_entity", "dialog_call_id",
    "dialog_remote_tag", "dialog_local_tag", "dialog_direction", "dialog_state",
    "dialog_duration", "local_identity", "local_identity_display", "local_target_uri",
    "remote_identity", "remote_identity_display", "remote_target_uri",
)  # fmt: skip


class DialogEventInfo(ctypes.Structure):
    """pjsua_buddy_dlg_event_info of PJSIP 2.15 (pjsua.h)."""

    _fields_ = [
        ("id", ctypes.c_int),
        *((name, PjStr) for name in _DIALOG_STRINGS),
        ("sub_state", ctypes.c_int),
        ("sub_state_name", ctypes.c_char_p),
        ("sub_term_code", ctypes.c_uint),
        ("sub_term_reason", PjStr),
        ("buf_", ctypes.c_char * 1024),
    ]


class DialogWatch:
    """A buddy whose dialog state PJSUA-LIB subscribes to; polled from the main loop."""

    def __init__(self, account: pj.Account, uri: str) -> None:
        self.library = ctypes.CDLL(pj._pjsua2.__file__)
        self.uri = uri
        config = pj.BuddyConfig()
        config.uri = uri
        config.subscribe = False  # presence: not this one
        self.buddy = pj.Buddy()
        self.buddy.create(account, config)
        status = self.library.pjsua_buddy_subscribe_dlg_event(self.buddy.getId(), 1)
        if status != 0:
            raise RuntimeError(f"pjsua_buddy_subscribe_dlg_event: {status}")
        self.last: tuple[str, str] | None = None

    def poll(self) -> None:
        info = DialogEventInfo()
        if self.library.pjsua_buddy_get_dlg_event_info(self.buddy.getId(), ctypes.byref(info)):
            return
        state = ((info.sub_state_name or b"-").decode(), info.dialog_state.text() or "idle")
        if state != self.last and state[0] == "ACTIVE":
            self.last = state
            say("dialog", self.uri, *state)


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
    parser.add_argument("--server", required=True, help="sip-edge host:port (UDP, TLS)")
    parser.add_argument("--user", required=True)
    parser.add_argument("--domain", default="127.0.0.1")
    parser.add_argument("--buddy", action="append", default=[])
    parser.add_argument("--publish", action="store_true")
    parser.add_argument("--mwi", action="store_true", help="subscribe to message-summary")
    parser.add_argument("--dialog-buddy", action="append", default=[])
    parser.add_argument("--log", default="")
    parser.add_argument("--password", help="digest credentials for any realm")
    parser.add_argument("--tls-ca", default="", help="SIP over TLS, trusting this CA (PEM)")
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
    kind = pj.PJSIP_TRANSPORT_UDP
    if args.tls_ca:
        kind = pj.PJSIP_TRANSPORT_TLS
        transport.tlsConfig.CaListFile = args.tls_ca
        # An unverifiable server is refused (the default only logs it).
        transport.tlsConfig.verifyServer = True
    transport_id = endpoint.transportCreate(kind, transport)
    endpoint.libStart()
    endpoint.audDevManager().setNullDev()

    server = f"sip:{args.server};transport=tls" if args.tls_ca else f"sip:{args.server}"
    account_config = pj.AccountConfig()
    account_config.idUri = f"sip:{args.user}@{args.domain}"
    account_config.regConfig.registrarUri = server
    account_config.sipConfig.proxies.append(f"{server};lr")
    if args.tls_ca:
        account_config.sipConfig.transportId = transport_id
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

    dialog_watches = [DialogWatch(account, uri) for uri in args.dialog_buddy]

    commands: queue.Queue[str] = queue.Queue()

    def read_commands() -> None:
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put("quit")

    threading.Thread(target=read_commands, daemon=True).start()
    say("ready", endpoint.transportGetInfo(transport_id).localName.split(":")[-1])

    while True:
        endpoint.libHandleEvents(20)
        for watch in dialog_watches:
            watch.poll()
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
