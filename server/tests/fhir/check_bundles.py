"""Checks Tether's FHIR Bundles with a real FHIR R4 (4.0.1) model.

Run by server/tests/fhir.rs as `python check_bundles.py BUNDLES.json`, where the file
holds `[{"name": ..., "bundle": {...}}, ...]`. Prints one JSON report on stdout:
`{"fhir_version", "package", "results": [{"name", "ok", "errors"}]}`; exits 0 when it
could check (whatever it found), 2 when the model is missing or not FHIR 4.0.1.

Each Bundle is parsed by `fhir.resources` 6.4.0 (the last release whose models are FHIR
4.0.1: 6.5 and later are R4B or R5), which checks every element's name, cardinality and
type, primitive formats (dates, instants, ids, URIs) and choice types, in the Bundle and
in every resource in it. The model does not check value sets, so the codes of the
required bindings Tether uses are checked here against R4's own lists, with what holds
a Bundle together: unique fullUrls, every reference resolving, the request of every
transaction entry, and UK Core's profile URLs.
"""

import json
import sys

UK_CORE = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-"
DD_SYSTEMS = (
    "https://www.datadictionary.nhs.uk/data_elements/attended_or_did_not_attend_code.html",
    "https://www.datadictionary.nhs.uk/data_elements/attendance_status.html",
)
DD_CODES = {"0", "2", "3", "4", "5", "6", "7"}

# R4 (4.0.1) required bindings, code for code, for the elements Tether fills.
REQUIRED = {
    ("Bundle", "type"): {"document", "message", "transaction", "transaction-response", "batch",
                         "batch-response", "history", "searchset", "collection"},
    ("EpisodeOfCare", "status"): {"planned", "waitlist", "active", "onhold", "finished", "cancelled",
                                  "entered-in-error"},
    ("Appointment", "status"): {"proposed", "pending", "booked", "arrived", "fulfilled", "cancelled", "noshow",
                                "entered-in-error", "checked-in", "waitlist"},
    ("Encounter", "status"): {"planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled",
                              "entered-in-error", "unknown"},
    ("Communication", "status"): {"preparation", "in-progress", "not-done", "on-hold", "stopped", "completed",
                                  "entered-in-error", "unknown"},
    ("Task", "status"): {"draft", "requested", "received", "accepted", "rejected", "ready", "cancelled",
                         "in-progress", "on-hold", "failed", "completed", "entered-in-error"},
    ("Task", "intent"): {"unknown", "proposal", "plan", "order", "original-order", "reflex-order", "filler-order",
                         "instance-order", "option"},
    ("Task", "priority"): {"routine", "urgent", "asap", "stat"},
    ("Flag", "status"): {"active", "inactive", "entered-in-error"},
    ("CarePlan", "status"): {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"},
    ("CarePlan", "intent"): {"proposal", "plan", "order", "option"},
    ("ServiceRequest", "status"): {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error",
                                   "unknown"},
    ("ServiceRequest", "intent"): {"proposal", "plan", "directive", "order", "original-order", "reflex-order",
                                   "filler-order", "instance-order", "option"},
    ("ClinicalImpression", "status"): {"in-progress", "completed", "entered-in-error"},
}
PARTICIPANT_STATUS = {"accepted", "declined", "tentative", "needs-action"}
ENTITY_ROLE = {"derivation", "revision", "quotation", "source", "removal"}
METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"}


def references(node, path=""):
    """Every `reference` string under node, with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield path + "." + key, value
            elif key != "contained":
                yield from references(value, path + "." + key)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from references(item, f"{path}[{i}]")


def check_resource(resource, where, full_urls, errors):
    kind = resource.get("resourceType")
    for (rtype, field), allowed in REQUIRED.items():
        if rtype == kind and field in resource and resource[field] not in allowed:
            errors.append(f"{where}: {kind}.{field} {resource[field]!r} is not an R4 code")
    if kind == "Appointment":
        for participant in resource.get("participant", []):
            if participant.get("status") not in PARTICIPANT_STATUS:
                errors.append(f"{where}: Appointment.participant.status {participant.get('status')!r}")
    if kind == "Provenance":
        for entity in resource.get("entity", []):
            if entity.get("role") not in ENTITY_ROLE:
                errors.append(f"{where}: Provenance.entity.role {entity.get('role')!r}")
    elif not any(i.get("system") and i.get("value") for i in resource.get("identifier", [])):
        errors.append(f"{where}: {kind} has no identifier with a system and a value")
    for profile in resource.get("meta", {}).get("profile", []):
        if profile != UK_CORE + kind:
            errors.append(f"{where}: {kind} claims the profile {profile}")
    contained = {c.get("id") for c in resource.get("contained", [])}
    for path, reference in references(resource):
        if reference.startswith("#"):
            if reference[1:] not in contained:
                errors.append(f"{where}{path}: {reference} is no contained resource")
        elif reference not in full_urls:
            errors.append(f"{where}{path}: {reference} resolves to no entry of the Bundle")
    for extension in resource.get("extension", []):
        if extension.get("url", "").endswith("/StructureDefinition/attendance-status"):
            codings = extension.get("valueCodeableConcept", {}).get("coding", [])
            national = [c for c in codings if c.get("system") in DD_SYSTEMS]
            if {c["system"] for c in national} != set(DD_SYSTEMS):
                errors.append(f"{where}: the attendance status lacks a Data Dictionary coding")
            if len({c.get("code") for c in national}) != 1 or not {c.get("code") for c in national} <= DD_CODES:
                errors.append(f"{where}: attendance codes {[c.get('code') for c in national]} disagree or are unknown")
            expected = {"fulfilled": "5", "finished": "5", "noshow": "3", "cancelled": "3"}.get(resource.get("status"))
            if expected and any(c.get("code") != expected for c in national):
                errors.append(f"{where}: {kind} {resource.get('status')} with attendance code "
                              f"{national[0].get('code') if national else None}")


def check(bundle, model):
    errors = []
    try:
        model.parse_obj(bundle)
    except Exception as error:  # the model's own message names the element
        errors.append(f"the FHIR R4 model refused it: {error}")
    if bundle.get("type") not in REQUIRED[("Bundle", "type")]:
        errors.append(f"Bundle.type {bundle.get('type')!r}")
    entries = bundle.get("entry", [])
    full_urls = [e.get("fullUrl") for e in entries]
    if len(set(full_urls)) != len(full_urls):
        errors.append("two entries share a fullUrl")
    full_urls = set(full_urls)
    for i, entry in enumerate(entries):
        resource = entry.get("resource", {})
        where = f"entry[{i}] ({resource.get('resourceType')})"
        if not str(entry.get("fullUrl", "")).startswith("urn:uuid:"):
            errors.append(f"{where}: fullUrl {entry.get('fullUrl')!r}")
        check_resource(resource, where, full_urls, errors)
        request = entry.get("request")
        if bundle.get("type") == "transaction":
            if not request or request.get("method") not in METHODS:
                errors.append(f"{where}: a transaction entry needs a request")
            elif request["method"] == "POST":
                if request.get("url") != resource.get("resourceType") or not request.get("ifNoneExist"):
                    errors.append(f"{where}: a POST must be a conditional create of its own type")
            elif request["method"] == "PUT":
                if not str(request.get("url", "")).startswith(resource.get("resourceType", "") + "?identifier="):
                    errors.append(f"{where}: a PUT must be a conditional update by identifier")
            else:
                errors.append(f"{where}: Tether sends only conditional creates and updates")
        elif request is not None:
            errors.append(f"{where}: only a transaction's entries carry a request")
    return errors


def main():
    try:
        import fhir.resources
        from fhir.resources.bundle import Bundle
    except ImportError as error:
        print(f"fhir.resources is not installed: {error}", file=sys.stderr)
        return 2
    if fhir.resources.__fhir_version__ != "4.0.1":
        print(f"fhir.resources {fhir.resources.__version__} models FHIR {fhir.resources.__fhir_version__}, "
              "not R4 (4.0.1): install fhir.resources==6.4.0", file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        bundles = json.load(f)
    results = []
    for item in bundles:
        errors = check(item["bundle"], Bundle)
        results.append({"name": item["name"], "ok": not errors, "errors": errors})
    print(json.dumps({"fhir_version": fhir.resources.__fhir_version__, "package": fhir.resources.__version__,
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
