"""Pres-rules documents: parsing, the conditions of one watcher, and combining rules.

Documents are RFC 4745 common-policy rulesets with RFC 5025 actions and
transformations. Parsing is hardened like ``pidf.parse_pidf`` (no DTD, no entity
expansion, no network, bounded size and depth); a document that does not fit
raises ``RulesError`` with a short reason.

Conditions (RFC 4745 section 7, RFC 5025 section 3.1), all of a rule's must hold:

* ``identity``: true when any child matches. ``one[@id]`` is one watcher,
  ``many`` every authenticated watcher (``many[@domain]`` those of one domain)
  minus its ``except[@id]`` and ``except[@domain]`` children. SIP identities
  compare as ``user@host``: scheme (``sip:``/``sips:``, or none, as XCAP
  documents often write them), port, parameters and headers are ignored, the
  host is case-insensitive, the user part is case-sensitive (RFC 3261) after
  %-unescaping. Other URIs (``tel:``) compare as written, scheme lowercased.
  An anonymous watcher (``None``) matches no identity condition.
* ``sphere[@value]``: the value is a space-separated list of spheres; true when
  the presentity's current sphere (passed in by the caller) is one of them,
  compared exactly. An unknown current sphere (``None``) never matches.
* ``validity``: ``from``/``until`` pairs of xs:dateTime; true when ``now`` lies in
  one of them, ``from`` inclusive and ``until`` exclusive. A value without a
  time zone is taken as UTC.
* Any other condition element (an extension this server does not know) makes
  the rule not match: rules only grant, so failing closed is the safe reading.

Empty or absent ``conditions`` match every watcher, anonymous ones included.

Combining (RFC 4745 section 10): every matching rule counts; for each permission
the most permissive value wins. ``sub-handling`` by its RFC 5025 value (block 0,
confirm 10, polite-block 20, allow 30); booleans by OR; ``provide-user-input``
by false < bare < thresholds < full; ``provide-services``/``-persons``/``-devices``
and ``provide-unknown-attribute`` by union. With no matching rule,
``Decision.sub_handling`` is ``None`` and nothing is granted; it is also ``None``
when rules match but none has a ``sub-handling`` (``Decision.matched`` tells the
two apart). The caller maps ``None`` to its default (RFC 5025 makes ``block``
the lowest value; Kamailio and OMA servers leave such watchers pending).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from urllib.parse import unquote

from lxml import etree

from presence.safexml import XmlRefused, parse_untrusted

COMMON_POLICY_NS = "urn:ietf:params:xml:ns:common-policy"
PRES_RULES_NS = "urn:ietf:params:xml:ns:pres-rules"
MAX_RULES_BYTES = 256 * 1024  # a pres-rules document can list many watchers
MAX_DEPTH = 32

SUB_HANDLING_VALUES: dict[str, int] = {"block": 0, "confirm": 10, "polite-block": 20, "allow": 30}

# RFC 5025 section 3.3.2: the attributes with a boolean provide-<name> permission.
ATTRIBUTE_NAMES = frozenset(
    {
        "activities",
        "class",
        "deviceID",
        "mood",
        "note",
        "place-is",
        "place-type",
        "privacy",
        "relationship",
        "sphere",
        "status-icon",
        "time-offset",
    }
)

_CP = f"{{{COMMON_POLICY_NS}}}"
_PR = f"{{{PRES_RULES_NS}}}"
_Element = etree._Element


class RulesError(ValueError):
    """Why a pres-rules document is not acceptable, in a few words."""


class UserInputLevel(IntEnum):
    """provide-user-input (RFC 5025 section 3.3.2.12), ordered by what it reveals."""

    FALSE = 0
    BARE = 1  # <user-input> without idle-threshold and last-input
    THRESHOLDS = 2  # with idle-threshold, without last-input
    FULL = 3


@dataclass(frozen=True)
class ComponentGrant:
    """Which tuples, persons or devices a watcher may see (provide-services/-persons/-devices).

    A component is granted when ``all`` is set or any listed value matches it;
    ``service_uris``/``service_uri_schemes`` only apply to tuples, ``device_ids``
    only to devices."""

    all: bool = False
    occurrence_ids: frozenset[str] = frozenset()
    classes: frozenset[str] = frozenset()
    device_ids: frozenset[str] = frozenset()
    service_uris: frozenset[str] = frozenset()
    service_uri_schemes: frozenset[str] = frozenset()  # lowercased

    def union(self, other: ComponentGrant) -> ComponentGrant:
        return ComponentGrant(
            all=self.all or other.all,
            occurrence_ids=self.occurrence_ids | other.occurrence_ids,
            classes=self.classes | other.classes,
            device_ids=self.device_ids | other.device_ids,
            service_uris=self.service_uris | other.service_uris,
            service_uri_schemes=self.service_uri_schemes | other.service_uri_schemes,
        )


@dataclass(frozen=True)
class Transformations:
    """What a watcher may see of the presence document (RFC 5025 section 3.3).

    ``declared`` says whether any matching rule carried a transformation this
    module understands, even one granting nothing; ``filter_document`` needs it
    for Kamailio's pass-through default."""

    services: ComponentGrant = ComponentGrant()
    persons: ComponentGrant = ComponentGrant()
    devices: ComponentGrant = ComponentGrant()
    attributes: frozenset[str] = frozenset()  # names from ATTRIBUTE_NAMES granted true
    user_input: UserInputLevel = UserInputLevel.FALSE
    unknown_attributes: frozenset[tuple[str, str]] = frozenset()  # (namespace, local name)
    all_attributes: bool = False
    declared: bool = False

    def union(self, other: Transformations) -> Transformations:
        return Transformations(
            services=self.services.union(other.services),
            persons=self.persons.union(other.persons),
            devices=self.devices.union(other.devices),
            attributes=self.attributes | other.attributes,
            user_input=max(self.user_input, other.user_input),
            unknown_attributes=self.unknown_attributes | other.unknown_attributes,
            all_attributes=self.all_attributes or other.all_attributes,
            declared=self.declared or other.declared,
        )

    def grants_attribute(self, name: str) -> bool:
        return self.all_attributes or name in self.attributes

    def user_input_level(self) -> UserInputLevel:
        return UserInputLevel.FULL if self.all_attributes else self.user_input

    def grants_unknown(self, namespace: str, name: str) -> bool:
        return self.all_attributes or (namespace, name) in self.unknown_attributes


@dataclass(frozen=True)
class ManyIdentities:
    """``<many>``: every identity (of ``domain`` if set) except the listed ones."""

    domain: str | None = None
    except_ids: frozenset[str] = frozenset()
    except_domains: frozenset[str] = frozenset()


@dataclass(frozen=True)
class IdentityCondition:
    ones: frozenset[str] = frozenset()  # identity keys, see identity_key
    manys: tuple[ManyIdentities, ...] = ()


@dataclass(frozen=True)
class SphereCondition:
    values: frozenset[str]


@dataclass(frozen=True)
class ValidityCondition:
    intervals: tuple[tuple[datetime, datetime], ...]


@dataclass(frozen=True)
class UnsupportedCondition:
    """A condition element this server does not evaluate: the rule never matches."""

    tag: str


Condition = IdentityCondition | SphereCondition | ValidityCondition | UnsupportedCondition


@dataclass(frozen=True)
class Rule:
    id: str
    conditions: tuple[Condition, ...] = ()
    sub_handling: str | None = None
    transformations: Transformations = Transformations()


@dataclass(frozen=True)
class Decision:
    """What the matching rules grant one watcher; ``matched`` lists their ids."""

    sub_handling: str | None
    transformations: Transformations = Transformations()
    matched: tuple[str, ...] = ()


# -- parsing --------------------------------------------------------------------------


def parse_rules(body: bytes) -> tuple[Rule, ...]:
    """The rules of a pres-rules document, in document order."""
    root = _parse_xml(body)
    if root.tag != f"{_CP}ruleset":
        raise RulesError("Not a common-policy ruleset")
    rules: list[Rule] = []
    seen: set[str] = set()
    for child in root:
        if child.tag != f"{_CP}rule":
            raise RulesError("Unexpected element in ruleset")
        rule = _parse_rule(child)
        if rule.id in seen:
            raise RulesError("Duplicate rule id")
        seen.add(rule.id)
        rules.append(rule)
    return tuple(rules)


def _parse_xml(body: bytes) -> _Element:
    try:
        return parse_untrusted(
            body, what="Rules document", max_bytes=MAX_RULES_BYTES, max_depth=MAX_DEPTH
        )
    except XmlRefused as error:
        raise RulesError(str(error)) from None


def _parse_rule(element: _Element) -> Rule:
    rule_id = element.get("id")
    if not rule_id:
        raise RulesError("Rule without id")
    parts: dict[str, _Element] = {}
    for child in element:
        name = _local(child, _CP)
        if name not in ("conditions", "actions", "transformations") or name in parts:
            raise RulesError(f"Unexpected element in rule {rule_id}")
        parts[name] = child
    conditions = parts.get("conditions")
    actions = parts.get("actions")
    transformations = parts.get("transformations")
    return Rule(
        id=rule_id,
        conditions=tuple(_parse_conditions(conditions)) if conditions is not None else (),
        sub_handling=_parse_sub_handling(actions) if actions is not None else None,
        transformations=(
            _parse_transformations(transformations)
            if transformations is not None
            else Transformations()
        ),
    )


def _parse_conditions(element: _Element) -> Iterable[Condition]:
    for child in element:
        name = _local(child, _CP)
        if name == "identity":
            yield _parse_identity(child)
        elif name == "sphere":
            value = child.get("value")
            if value is None:
                raise RulesError("sphere without value")
            yield SphereCondition(frozenset(value.split()))
        elif name == "validity":
            yield _parse_validity(child)
        else:
            yield UnsupportedCondition(str(child.tag))


def _parse_identity(element: _Element) -> IdentityCondition:
    ones: set[str] = set()
    manys: list[ManyIdentities] = []
    for child in element:
        name = _local(child, _CP)
        if name == "one":
            key = identity_key(child.get("id") or "")
            if key is None:
                raise RulesError("identity one without a usable id")
            ones.add(key)
        elif name == "many":
            manys.append(_parse_many(child))
        # Other children are extensions (RFC 4745 allows them): they match nobody.
    return IdentityCondition(frozenset(ones), tuple(manys))


def _parse_many(element: _Element) -> ManyIdentities:
    except_ids: set[str] = set()
    except_domains: set[str] = set()
    for child in element:
        if child.tag != f"{_CP}except":
            continue
        ident, domain = child.get("id"), child.get("domain")
        if ident is not None:
            key = identity_key(ident)
            if key is None:
                raise RulesError("except without a usable id")
            except_ids.add(key)
        if domain is not None:
            except_domains.add(domain.strip().lower())
    domain = element.get("domain")
    return ManyIdentities(
        domain=domain.strip().lower() if domain is not None else None,
        except_ids=frozenset(except_ids),
        except_domains=frozenset(except_domains),
    )


def _parse_validity(element: _Element) -> ValidityCondition:
    children = list(element)
    if len(children) % 2:
        raise RulesError("validity needs from/until pairs")
    intervals = []
    for start, end in zip(children[::2], children[1::2], strict=True):
        if start.tag != f"{_CP}from" or end.tag != f"{_CP}until":
            raise RulesError("validity needs from/until pairs")
        intervals.append((_parse_datetime(start.text), _parse_datetime(end.text)))
    return ValidityCondition(tuple(intervals))


def _parse_datetime(text: str | None) -> datetime:
    try:
        moment = datetime.fromisoformat((text or "").strip())
    except ValueError:
        raise RulesError("Bad xs:dateTime in validity") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _parse_sub_handling(element: _Element) -> str | None:
    values = [(child.text or "").strip() for child in element.iterchildren(f"{_PR}sub-handling")]
    for value in values:
        if value not in SUB_HANDLING_VALUES:
            raise RulesError("Bad sub-handling value")
    return max(values, key=SUB_HANDLING_VALUES.__getitem__, default=None)


_COMPONENT_VALUES = {
    # element name -> ComponentGrant field; which components accept which is below
    "occurrence-id": "occurrence_ids",
    "class": "classes",
    "deviceID": "device_ids",
    "service-uri": "service_uris",
    "service-uri-scheme": "service_uri_schemes",
}
_COMPONENTS = {
    "provide-services": (
        "all-services",
        {"occurrence-id", "class", "service-uri", "service-uri-scheme"},
    ),
    "provide-persons": ("all-persons", {"occurrence-id", "class"}),
    "provide-devices": ("all-devices", {"occurrence-id", "class", "deviceID"}),
}


def _parse_transformations(element: _Element) -> Transformations:
    result = Transformations()
    for child in element:
        name = _local(child, _PR)
        if name is None:
            continue  # another namespace's transformation: grants nothing here
        part = _parse_transformation(name, child)
        if part is not None:
            result = result.union(part)
    return result


def _parse_transformation(name: str, element: _Element) -> Transformations | None:
    if name in _COMPONENTS:
        grant = _parse_component(name, element)
        key = name.removeprefix("provide-")
        return Transformations(declared=True, **{key: grant})
    if name == "provide-user-input":
        value = (element.text or "").strip()
        try:
            level = UserInputLevel[value.upper()]
        except KeyError:
            raise RulesError("Bad provide-user-input value") from None
        return Transformations(user_input=level, declared=True)
    if name == "provide-unknown-attribute":
        namespace, local = element.get("ns"), element.get("name")
        if not namespace or not local:
            raise RulesError("provide-unknown-attribute needs ns and name")
        granted = frozenset({(namespace, local)}) if _boolean(element) else frozenset()
        return Transformations(unknown_attributes=granted, declared=True)
    if name == "provide-all-attributes":
        return Transformations(all_attributes=True, declared=True)
    attribute = name.removeprefix("provide-")
    if name.startswith("provide-") and attribute in ATTRIBUTE_NAMES:
        granted = frozenset({attribute}) if _boolean(element) else frozenset()
        return Transformations(attributes=granted, declared=True)
    return None


def _parse_component(name: str, element: _Element) -> ComponentGrant:
    all_name, accepted = _COMPONENTS[name]
    everything = False
    values: dict[str, set[str]] = {}
    for child in element:
        child_name = _local(child, _PR)
        if child_name == "occurence-id":  # misspelling of early drafts, still written by clients
            child_name = "occurrence-id"
        if child_name == all_name:
            everything = True
        elif child_name in accepted:
            text = (child.text or "").strip()
            if child_name == "service-uri-scheme":
                text = text.lower()
            if text:
                values.setdefault(_COMPONENT_VALUES[child_name], set()).add(text)
    return ComponentGrant(all=everything, **{key: frozenset(v) for key, v in values.items()})


def _boolean(element: _Element) -> bool:
    value = (element.text or "").strip()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise RulesError(f"Bad boolean in {etree.QName(element).localname}")


def _local(element: _Element, namespace: str) -> str | None:
    """The local name of an element in ``namespace`` (given as ``{uri}``), else None."""
    tag = element.tag
    if isinstance(tag, str) and tag.startswith(namespace):
        return tag[len(namespace) :]
    return None


# -- evaluation -----------------------------------------------------------------------


def identity_key(uri: str) -> str | None:
    """How an identity compares: ``user@host`` for SIP (or scheme-less) URIs, host
    lowercased; other URIs as ``scheme:rest``. None when there is nothing to compare."""
    identity = _identity(uri)
    return identity[0] if identity is not None else None


def _identity(uri: str) -> tuple[str, str | None] | None:
    """(identity key, domain): the domain is the SIP host, None for other schemes."""
    text = uri.strip()
    if "<" in text:  # name-addr: take the URI between the brackets
        text = text.partition("<")[2].partition(">")[0].strip()
    scheme, colon, rest = text.partition(":")
    if not colon or "@" in scheme:  # no scheme: XCAP documents often omit "sip:"
        scheme, rest = "sip", text
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        return (f"{scheme}:{rest}", None) if rest else None
    address = rest.partition(";")[0].partition("?")[0]
    user, at, hostport = address.rpartition("@")
    if hostport.startswith("["):
        host = hostport.partition("]")[0] + "]"
    else:
        host = hostport.partition(":")[0]
    host = host.lower()
    if not host:
        return None
    return (f"{unquote(user)}@{host}" if at else host), host


@dataclass(frozen=True)
class _Watcher:
    key: str | None
    domain: str | None
    sphere: str | None
    now: datetime


def evaluate(
    rules: Iterable[Rule], watcher: str | None, *, sphere: str | None, now: datetime
) -> Decision:
    """Combine every rule that matches ``watcher`` (None: unauthenticated) at ``now``
    while the presentity is in ``sphere`` (None: unknown)."""
    if now.tzinfo is None:
        raise ValueError("now must carry a time zone")
    key, domain = (_identity(watcher) if watcher is not None else None) or (None, None)
    context = _Watcher(key, domain, sphere, now)
    matched = [rule for rule in rules if all(_holds(c, context) for c in rule.conditions)]
    if not matched:
        return Decision(sub_handling=None)
    transformations = Transformations()
    for rule in matched:
        transformations = transformations.union(rule.transformations)
    values = [rule.sub_handling for rule in matched if rule.sub_handling is not None]
    # Matching rules that all say nothing about sub-handling leave it to the caller's
    # default, as when no rule matches (``matched`` tells the two apart).
    sub_handling = max(values, key=SUB_HANDLING_VALUES.__getitem__, default=None)
    return Decision(sub_handling, transformations, tuple(rule.id for rule in matched))


def _holds(condition: Condition, watcher: _Watcher) -> bool:
    if isinstance(condition, IdentityCondition):
        return _identity_holds(condition, watcher)
    if isinstance(condition, SphereCondition):
        return watcher.sphere is not None and watcher.sphere in condition.values
    if isinstance(condition, ValidityCondition):
        return any(start <= watcher.now < end for start, end in condition.intervals)
    return False  # UnsupportedCondition


def _identity_holds(condition: IdentityCondition, watcher: _Watcher) -> bool:
    if watcher.key is None:
        return False
    if watcher.key in condition.ones:
        return True
    for many in condition.manys:
        if many.domain is not None and many.domain != watcher.domain:
            continue
        if watcher.key in many.except_ids or watcher.domain in many.except_domains:
            continue
        return True
    return False
