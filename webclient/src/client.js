// The browser presence client: SIP over WebSocket (RFC 7118) with SIP.js for PUBLISH and
// SUBSCRIBE/NOTIFY, XCAP (RFC 4825) over fetch for the buddy list (RFC 4826
// resource-lists) and the privacy rules (RFC 5025 pres-rules). One page, no framework.

import { Publisher, PublisherState, Subscriber, SubscriptionState, UserAgent } from "sip.js";

const NS = {
  pidf: "urn:ietf:params:xml:ns:pidf",
  dm: "urn:ietf:params:xml:ns:pidf:data-model",
  rpid: "urn:ietf:params:xml:ns:pidf:rpid",
  rl: "urn:ietf:params:xml:ns:resource-lists",
  cp: "urn:ietf:params:xml:ns:common-policy",
  pr: "urn:ietf:params:xml:ns:pres-rules",
  winfo: "urn:ietf:params:xml:ns:watcherinfo",
};
// The rules this page writes; rules written by other clients are left as they are.
const ALLOW_RULE = "webclient-allow";
const BLOCK_RULE = "webclient-block";
const BUDDY_LIST = "buddies";

const $ = (selector) => document.querySelector(selector);
const params = new URLSearchParams(location.search);
// Seconds a publication and a subscription last before the page refreshes them;
// `?expires=N` shortens them (a closed tab then goes offline after N seconds).
const expires = Number(params.get("expires")) || 3600;

let session = null; // {aor, ua, xcap, publisher, buddies: Map by uri, watchers: Map by winfo id}

// --- presence documents (PIDF, RFC 3863, with RPID activities, RFC 4480) ---------

function pidfDocument(aor, status, note) {
  const doc = document.implementation.createDocument(NS.pidf, "presence", null);
  const root = doc.documentElement;
  root.setAttribute("xmlns:dm", NS.dm);
  root.setAttribute("xmlns:rpid", NS.rpid);
  root.setAttribute("entity", aor);
  const tuple = root.appendChild(doc.createElementNS(NS.pidf, "tuple"));
  tuple.setAttribute("id", "web");
  const basic = tuple
    .appendChild(doc.createElementNS(NS.pidf, "status"))
    .appendChild(doc.createElementNS(NS.pidf, "basic"));
  basic.textContent = status === "offline" ? "closed" : "open";
  if (note) tuple.appendChild(doc.createElementNS(NS.pidf, "note")).textContent = note;
  if (status === "away" || status === "busy") {
    const person = root.appendChild(doc.createElementNS(NS.dm, "dm:person"));
    person.setAttribute("id", "person");
    person
      .appendChild(doc.createElementNS(NS.rpid, "rpid:activities"))
      .appendChild(doc.createElementNS(NS.rpid, `rpid:${status}`));
  }
  return '<?xml version="1.0" encoding="UTF-8"?>' + new XMLSerializer().serializeToString(doc);
}

// What a watcher shows of a PIDF document: offline without an open tuple, else busy
// or away from the RPID activities, else available; and the first note.
function readPresence(text) {
  const doc = new DOMParser().parseFromString(text, "application/xml");
  if (doc.getElementsByTagName("parsererror").length) return { status: "unknown", note: "" };
  const basics = [...doc.getElementsByTagNameNS(NS.pidf, "basic")].map((b) => b.textContent.trim());
  const activities = [...doc.getElementsByTagNameNS(NS.rpid, "activities")].flatMap((a) =>
    [...a.children].map((child) => child.localName),
  );
  const notes = [
    ...doc.getElementsByTagNameNS(NS.pidf, "note"),
    ...doc.getElementsByTagNameNS(NS.dm, "note"),
  ].map((n) => n.textContent.trim());
  let status = "offline";
  if (basics.includes("open")) {
    status = activities.includes("busy") ? "busy" : activities.includes("away") ? "away" : "available";
  }
  return { status, note: status === "offline" ? "" : notes.find(Boolean) || "" };
}

// --- digest: SIP.js keeps only the last WWW-Authenticate of a 401 (its parser replaces
// the earlier ones) and answers only MD5; the server offers SHA-256 first, then MD5
// (RFC 8760: most preferred first). So the MD5 challenge goes last, where SIP.js reads.

function md5ChallengeLast(message) {
  if (typeof message !== "string" || !/^SIP\/2\.0 40[17] /.test(message)) return message;
  const end = message.indexOf("\r\n\r\n");
  if (end < 0) return message;
  const lines = message.slice(0, end).split("\r\n");
  const isChallenge = (line) => /^(www|proxy)-authenticate\s*:/i.test(line);
  const isMd5 = (line) => !/algorithm\s*=/i.test(line) || /algorithm\s*=\s*"?md5"?\s*(,|$)/i.test(line);
  const challenges = lines.filter(isChallenge);
  const ordered = [...challenges.filter((l) => !isMd5(l)), ...challenges.filter(isMd5)];
  let next = 0;
  const head = lines.map((line) => (isChallenge(line) ? ordered[next++] : line));
  return head.join("\r\n") + message.slice(end);
}

// --- XCAP: read a document, change it, write it back unless it changed meanwhile ---

class Xcap {
  constructor(user, domain, password, aor) {
    this.auth = "Basic " + btoa(unescape(encodeURIComponent(`${user}@${domain}:${password}`)));
    this.aor = aor;
  }

  url(auid) {
    return `/xcap-root/${auid}/users/${encodeURIComponent(this.aor)}/index`;
  }

  // The document (a fresh empty one when there is none) and its ETag (null then).
  async read(auid, rootNs, rootName) {
    const answer = await fetch(this.url(auid), { headers: { Authorization: this.auth } });
    if (answer.status === 404) {
      return { doc: document.implementation.createDocument(rootNs, rootName, null), etag: null };
    }
    if (!answer.ok) throw new Error(`XCAP ${auid}: ${answer.status} ${await answer.text()}`);
    const doc = new DOMParser().parseFromString(await answer.text(), "application/xml");
    return { doc, etag: answer.headers.get("ETag") };
  }

  // Apply `change(doc)` and PUT the result with If-Match (If-None-Match: * for a new
  // document), again from a fresh read when another client wrote first (412).
  async update(auid, rootNs, rootName, mediaType, change) {
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const { doc, etag } = await this.read(auid, rootNs, rootName);
      change(doc);
      const headers = { Authorization: this.auth, "Content-Type": mediaType };
      if (etag) headers["If-Match"] = etag;
      else headers["If-None-Match"] = "*";
      const body = new XMLSerializer().serializeToString(doc);
      const answer = await fetch(this.url(auid), { method: "PUT", headers, body });
      if (answer.status === 412) continue;
      if (!answer.ok) throw new Error(`XCAP ${auid}: ${answer.status} ${await answer.text()}`);
      return doc;
    }
    throw new Error(`XCAP ${auid}: changed by another client three times; try again`);
  }

  async buddies() {
    const { doc } = await this.read("resource-lists", NS.rl, "resource-lists");
    return [...doc.getElementsByTagNameNS(NS.rl, "entry")].map((e) => e.getAttribute("uri"));
  }

  changeBuddies(change) {
    return this.update("resource-lists", NS.rl, "resource-lists", "application/resource-lists+xml", change);
  }

  addBuddy(uri) {
    return this.changeBuddies((doc) => {
      const root = doc.documentElement;
      const entries = [...doc.getElementsByTagNameNS(NS.rl, "entry")];
      if (entries.some((e) => e.getAttribute("uri") === uri)) return;
      let list = [...root.children].find(
        (l) => l.namespaceURI === NS.rl && l.localName === "list" && l.getAttribute("name") === BUDDY_LIST,
      );
      if (!list) {
        list = root.appendChild(doc.createElementNS(NS.rl, "list"));
        list.setAttribute("name", BUDDY_LIST);
      }
      list.appendChild(doc.createElementNS(NS.rl, "entry")).setAttribute("uri", uri);
    });
  }

  removeBuddy(uri) {
    return this.changeBuddies((doc) => {
      for (const entry of [...doc.getElementsByTagNameNS(NS.rl, "entry")]) {
        if (entry.getAttribute("uri") === uri) entry.remove();
      }
    });
  }

  // Allow or block one watcher: its identity moves to this page's allow or block rule
  // (a rule left without identities goes, since an empty <identity> is not valid).
  setWatcherRule(uri, allow) {
    return this.update("pres-rules", NS.cp, "ruleset", "application/auth-policy+xml", (doc) => {
      const root = doc.documentElement;
      const rules = (id) =>
        [...root.children].find((r) => r.localName === "rule" && r.getAttribute("id") === id);
      for (const id of [ALLOW_RULE, BLOCK_RULE]) {
        const rule = rules(id);
        if (!rule) continue;
        for (const one of [...rule.getElementsByTagNameNS(NS.cp, "one")]) {
          if (one.getAttribute("id") === uri) one.remove();
        }
        if (!rule.getElementsByTagNameNS(NS.cp, "one").length) rule.remove();
      }
      const id = allow ? ALLOW_RULE : BLOCK_RULE;
      const existing = rules(id);
      if (existing) {
        const identity = existing.getElementsByTagNameNS(NS.cp, "identity")[0];
        identity.appendChild(doc.createElementNS(NS.cp, "one")).setAttribute("id", uri);
        return;
      }
      const rule = root.appendChild(doc.createElementNS(NS.cp, "rule"));
      rule.setAttribute("id", id);
      rule
        .appendChild(doc.createElementNS(NS.cp, "conditions"))
        .appendChild(doc.createElementNS(NS.cp, "identity"))
        .appendChild(doc.createElementNS(NS.cp, "one"))
        .setAttribute("id", uri);
      const handling = rule
        .appendChild(doc.createElementNS(NS.cp, "actions"))
        .appendChild(doc.createElementNS(NS.pr, "pr:sub-handling"));
      handling.textContent = allow ? "allow" : "block";
      if (allow) {
        // RFC 5025 shows a watcher only what a rule grants: all of it here.
        const grants = rule.appendChild(doc.createElementNS(NS.cp, "transformations"));
        for (const [what, all] of [
          ["provide-services", "all-services"],
          ["provide-persons", "all-persons"],
          ["provide-devices", "all-devices"],
        ]) {
          grants
            .appendChild(doc.createElementNS(NS.pr, `pr:${what}`))
            .appendChild(doc.createElementNS(NS.pr, `pr:${all}`));
        }
        grants.appendChild(doc.createElementNS(NS.pr, "pr:provide-all-attributes"));
      }
    });
  }
}

// --- PUBLISH (RFC 3903) whose answer the page waits for -----------------------------

// SIP.js's Publisher resolves publish() once the request is sent and refreshes it on
// its own; this one also reports each final answer, so the page shows a status only
// once the server has taken it, and says so when a refresh fails.
class AnsweredPublisher extends Publisher {
  constructor(ua, uri) {
    super(ua, uri, "presence", { expires, contentType: "application/pidf+xml" });
    this.waiting = null;
  }

  receiveResponse(response) {
    super.receiveResponse(response);
    if (response.statusCode < 200) return;
    const answer = { code: response.statusCode, reason: response.reasonPhrase };
    if (this.waiting) {
      this.waiting(answer);
      this.waiting = null;
    } else if (answer.code >= 300) {
      show(`refreshing my status: ${answer.code} ${answer.reason}`);
    }
  }

  async publishAnswered(body) {
    const answered = new Promise((resolve) => (this.waiting = resolve));
    await this.publish(body);
    return answered;
  }
}

// --- the page --------------------------------------------------------------------

function show(text) {
  $("#message").textContent = text;
}

async function logIn(form) {
  const aor = form.aor.value.trim().replace(/^(?!sips?:)/, "sip:");
  const uri = UserAgent.makeURI(aor);
  if (!uri || !uri.user) throw new Error(`not a SIP address: ${aor}`);
  const config = await (await fetch("config.json")).json();
  const server = form.server.value.trim() || (location.protocol === "https:" ? config.wss : config.ws);
  if (!server) throw new Error("the server has no WebSocket listener for this page: give its URL");
  // The XCAP password first: a wrong one stops here, before any SIP.
  const xcap = new Xcap(uri.user, uri.host, form.xcapPassword.value, aor);
  const buddies = await xcap.buddies();
  const ua = new UserAgent({
    uri,
    authorizationUsername: uri.user,
    authorizationPassword: form.sipPassword.value,
    transportOptions: { server },
    logLevel: "warn",
    delegate: {
      // NOTIFYs reach a browser only over its connection: without it the page is stale.
      onDisconnect: (error) => error && show(`connection to ${server} lost: reload the page`),
    },
  });
  const deliver = ua.transport.onMessage;
  ua.transport.onMessage = (message) => deliver(md5ChallengeLast(message));
  await ua.start();
  session = { aor, ua, xcap, publisher: null, buddies: new Map(), watchers: new Map() };
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#me").textContent = aor;
  session.publisher = new AnsweredPublisher(ua, uri);
  subscribeWatchers();
  for (const buddy of buddies) watch(buddy);
  renderBuddies();
}

async function publish(status, note) {
  // A publisher the server refused is done (SIP.js): the next status starts a new one.
  if (session.publisher.state === PublisherState.Terminated) {
    session.publisher = new AnsweredPublisher(session.ua, UserAgent.makeURI(session.aor));
  }
  const { code, reason } = await session.publisher.publishAnswered(pidfDocument(session.aor, status, note));
  if (code >= 300) throw new Error(`publishing my status: ${code} ${reason}`);
  $("#my-status").textContent = status;
  $("#my-status").dataset.status = status;
}

// One subscription per buddy; what it shows follows each NOTIFY.
function watch(uri) {
  if (session.buddies.has(uri)) return;
  const target = UserAgent.makeURI(uri);
  if (!target) throw new Error(`not a SIP address: ${uri}`);
  const buddy = { uri, state: "subscribing", status: "unknown", note: "", subscriber: null };
  session.buddies.set(uri, buddy);
  const subscriber = new Subscriber(session.ua, target, "presence", { expires });
  buddy.subscriber = subscriber;
  subscriber.delegate = {
    onNotify: (notification) => {
      notification.accept();
      const request = notification.request;
      const state = (request.getHeader("Subscription-State") || "").split(";")[0].trim();
      buddy.state = state || "active";
      if (buddy.state === "active" && request.body) Object.assign(buddy, readPresence(request.body));
      renderBuddies();
    },
  };
  subscriber.stateChange.addListener((state) => {
    if (state === SubscriptionState.Terminated) {
      buddy.state = "terminated";
      renderBuddies();
    }
  });
  subscriber.subscribe().catch((error) => show(`subscribe ${uri}: ${error.message}`));
}

function unwatch(uri) {
  const buddy = session.buddies.get(uri);
  if (!buddy) return;
  session.buddies.delete(uri);
  buddy.subscriber.unsubscribe().catch(() => {});
}

// Who watches me (presence.winfo, RFC 3857/3858): full state replaces, partial merges.
function subscribeWatchers() {
  const subscriber = new Subscriber(session.ua, UserAgent.makeURI(session.aor), "presence.winfo", {
    expires,
  });
  subscriber.delegate = {
    onNotify: (notification) => {
      notification.accept();
      const body = notification.request.body;
      if (!body) return;
      const doc = new DOMParser().parseFromString(body, "application/xml");
      const root = doc.documentElement;
      if (root.localName !== "watcherinfo") return;
      if (root.getAttribute("state") === "full") session.watchers.clear();
      for (const watcher of doc.getElementsByTagNameNS(NS.winfo, "watcher")) {
        session.watchers.set(watcher.getAttribute("id"), {
          uri: watcher.textContent.trim(),
          status: watcher.getAttribute("status"),
        });
      }
      renderWatchers();
    },
  };
  subscriber.subscribe().catch((error) => show(`watcher list: ${error.message}`));
}

function button(label, action) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.addEventListener("click", () => action().catch((error) => show(error.message)));
  return element;
}

function renderBuddies() {
  const list = $("#buddies");
  list.replaceChildren();
  for (const buddy of [...session.buddies.values()].sort((a, b) => a.uri.localeCompare(b.uri))) {
    const shown = buddy.state === "active" ? buddy.status : buddy.state;
    const row = document.createElement("li");
    row.dataset.buddy = buddy.uri;
    const status = row.appendChild(document.createElement("span"));
    status.className = "status";
    status.dataset.status = shown;
    status.textContent = shown;
    row.appendChild(document.createElement("span")).textContent = buddy.uri;
    const note = row.appendChild(document.createElement("span"));
    note.className = "note";
    note.textContent = buddy.state === "active" ? buddy.note : "";
    row.appendChild(
      button("remove", async () => {
        await session.xcap.removeBuddy(buddy.uri);
        unwatch(buddy.uri);
        renderBuddies();
      }),
    );
    list.appendChild(row);
  }
}

function renderWatchers() {
  const list = $("#watchers");
  list.replaceChildren();
  // One row per watcher address (a watcher with two devices has two subscriptions).
  const byUri = new Map();
  for (const watcher of session.watchers.values()) {
    if (byUri.get(watcher.uri) !== "active") byUri.set(watcher.uri, watcher.status);
  }
  for (const [uri, status] of [...byUri].sort()) {
    const row = document.createElement("li");
    row.dataset.watcher = uri;
    const label = row.appendChild(document.createElement("span"));
    label.className = "status";
    label.dataset.status = status;
    label.textContent = status;
    row.appendChild(document.createElement("span")).textContent = uri;
    row.appendChild(button("allow", () => session.xcap.setWatcherRule(uri, true)));
    row.appendChild(button("block", () => session.xcap.setWatcherRule(uri, false)));
    list.appendChild(row);
  }
}

function onSubmit(selector, action) {
  $(selector).addEventListener("submit", (event) => {
    event.preventDefault();
    show("");
    action(event.target).catch((error) => show(error.message));
  });
}

onSubmit("#login", logIn);
onSubmit("#publish", (form) => publish(form.status.value, form.note.value.trim()));
onSubmit("#add-buddy", async (form) => {
  const uri = form.uri.value.trim().replace(/^(?!sips?:)/, "sip:");
  if (!UserAgent.makeURI(uri)) throw new Error(`not a SIP address: ${uri}`);
  await session.xcap.addBuddy(uri);
  watch(uri);
  renderBuddies();
  form.reset();
});
// A closing tab withdraws its publication if the message still gets out; otherwise
// the publication expires (`?expires=`).
addEventListener("pagehide", () => {
  if (session?.publisher) session.publisher.unpublish().catch(() => {});
});
