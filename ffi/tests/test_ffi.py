"""The Python bindings over the real library (run by ffi/tests/bindings.rs).

Environment: TETHER_BINDINGS (the generated module and the library), TETHER_SERVER (a
real server on loopback), TETHER_USERNAME, TETHER_MANAGER (a team manager of the same
team), TETHER_PASSWORD.
"""

import datetime
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request

sys.path.insert(0, os.environ["TETHER_BINDINGS"])
import tether as t  # noqa: E402

SERVER = os.environ["TETHER_SERVER"]
USERNAME = os.environ["TETHER_USERNAME"]
MANAGER = os.environ["TETHER_MANAGER"]
PASSWORD = os.environ["TETHER_PASSWORD"]
KEY = bytes(range(32))
checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1


class Urllib(t.Transport):
    """The host's HTTP stack: urllib, as an app would use OkHttp or URLSession."""

    def __init__(self, base, during=None):
        self.base = base
        self.paths = []
        self.during = during

    def post(self, request):
        self.paths.append(request.path)
        if self.during is not None:
            self.during()
        http = urllib.request.Request(self.base + request.path, data=bytes(request.body), method="POST")
        http.add_header("Content-Type", request.content_type)
        if request.bearer is not None:
            http.add_header("Authorization", "Bearer " + request.bearer)
        try:
            with urllib.request.urlopen(http, timeout=60) as response:
                return t.HttpResponse(status=response.status, body=response.read())
        except urllib.error.HTTPError as refused:
            return t.HttpResponse(status=refused.code, body=refused.read())
        except OSError as failed:
            raise t.TransportError.Failed(reason=str(failed))


def expect_error(kind, call):
    try:
        call()
    except kind as error:
        return error
    raise AssertionError(f"expected {kind.__name__}")


now = datetime.datetime.now(datetime.timezone.utc)
store = tempfile.mkdtemp()

# A key of the wrong length names the field.
error = expect_error(t.TetherError.InvalidInput, lambda: t.Tether.open(store, b"short"))
check(error.field == "key", f"field {error.field}")

phone = t.Tether.open(store, KEY)
check(len(phone.device_id()) == 36, "a device id")

# Another key does not open the store.
expect_error(t.TetherError.WrongKey, lambda: t.Tether.open(store, bytes(32)))

episode = phone.open_episode(
    t.NewEpisode(
        patient_ref="RX-PY-1",
        pathway=t.Pathway.URGENT_REFERRAL,
        team="north",
        facts=[t.FactValue.RISK(value=t.Risk.HIGH)],
        plan="",
    ),
    "u-asha",
    now - datetime.timedelta(hours=3),
)
missed = phone.record(
    episode,
    t.EventBody.APPOINTMENT_MISSED(appointment=t.Appointment.INITIAL, reason=t.MissReason.DID_NOT_ATTEND),
    now - datetime.timedelta(hours=2),
    None,
    "u-asha",
)
visit = phone.record(
    episode,
    t.EventBody.HOME_VISIT(announced=False, outcome=t.VisitOutcome.NO_ANSWER, location=None),
    now - datetime.timedelta(minutes=30),
    "nobody in; curtains drawn",
    "u-asha",
)
card = phone.record(
    episode, t.EventBody.CALLING_CARD_LEFT(visit=visit), now - datetime.timedelta(minutes=25), None, "u-asha"
)

# The records read back typed, in the order they happened.
timeline = phone.timeline(episode)
check([e.id for e in timeline] == [missed, visit, card], "the timeline")
check(timeline[1].body == t.EventBody.HOME_VISIT(announced=False, outcome=t.VisitOutcome.NO_ANSWER, location=None),
      f"the visit reads back: {timeline[1].body}")
check(timeline[1].note == "nobody in; curtains drawn", "the note")
check(phone.episode(episode).facts.risk == [t.Risk.HIGH], "the fact")

# The card is done; what is left is due, soonest first.
actions = phone.actions(episode, now)
check(actions.provisional, "offline actions are provisional")
cards = [a for a in actions.actions if a.code == t.ActionCode.LEAVE_CALLING_CARD]
check(len(cards) == 1 and cards[0].state == t.ActionState.DONE and cards[0].resolved_by == card,
      f"the calling card action is done by the card: {cards}")
next_actions = phone.next_actions(now)
check(len(next_actions) > 0, "something is due next")
check(all(n.episode_id == episode and n.patient_ref == "RX-PY-1" for n in next_actions), "all on this episode")
check(all(n.action.state in (t.ActionState.OPEN, t.ActionState.OVERDUE) for n in next_actions), "open or overdue")
check([n.action.due for n in next_actions] == sorted(n.action.due for n in next_actions), "soonest first")
check(t.ActionCode.LEAVE_CALLING_CARD not in [n.action.code for n in next_actions], "the card is not due")
print("next:", ", ".join(f"{n.action.code.name} by {n.action.due:%H:%M}" for n in next_actions))

# A bad record is refused, naming the field, and stores nothing.
error = expect_error(
    t.TetherError.InvalidInput,
    lambda: phone.record(episode, t.EventBody.CALLING_CARD_LEFT(visit="not-a-uuid"), now, None, "u-asha"),
)
check(error.field == "visit", f"field {error.field}")
check("not-a-uuid" not in str(error), "the message does not repeat the value")
error = expect_error(
    t.TetherError.InvalidInput,
    lambda: phone.record(
        episode,
        t.EventBody.DECISION(topic=t.Topic.COLD_CALL, outcome=t.DecisionOutcome.YES, rationale="  "),
        now,
        None,
        "u-asha",
    ),
)
check(error.field == "rationale", f"field {error.field}")
check(len(phone.timeline(episode)) == 3, "nothing stored")
error = expect_error(
    t.TetherError.InvalidInput,
    lambda: phone.open_episode(t.NewEpisode(patient_ref=" ", pathway=t.Pathway.IN_SERVICE, team="north", facts=[],
                                            plan=""), "u-asha", now),
)
check(error.field == "patient_ref", f"field {error.field}")
expect_error(
    t.TetherError.NotFound,
    lambda: phone.record("0190f5a4-0000-7000-8000-000000000001", t.EventBody.REENGAGED(), now, None, "u-asha"),
)

# Facts and the plan, typed both ways.
coordinator = t.FactValue.CARE_COORDINATOR(value="u-bea")
changed = phone.set_fact(episode, coordinator, "u-asha", now - datetime.timedelta(minutes=20))
phone.set_plan(episode, "Phone the sister before the next visit.", now - datetime.timedelta(minutes=19))
read = phone.episode(episode)
check(read.facts.care_coordinator == ["u-bea"] and read.conflicts == [], "the coordinator")
check(read.plan == "Phone the sister before the next visit.", "the plan")
check(phone.timeline(episode)[-1].id == changed, "the change is on the timeline")
check(phone.timeline(episode)[-1].body == t.EventBody.FACT_CHANGED(fact=coordinator), "typed as a fact change")
caseload = phone.episodes(now)
check([(e.id, e.patient_ref, e.pathway, e.conflicts) for e in caseload] == [(episode, "RX-PY-1",
      t.Pathway.URGENT_REFERRAL, 0)], f"the caseload: {caseload}")
# Open counts the overdue too, as the server's caseload does.
check(caseload[0].open_actions == len(phone.next_actions(now)), "the counts")
check(caseload[0].overdue_actions <= caseload[0].open_actions, "overdue is a part of open")
check(all(e.received_at is None for e in phone.timeline(episode)), "no receipt times before a sync")

# An episode of a team the user is not in: the server refuses it by name.
elsewhere = phone.open_episode(
    t.NewEpisode(patient_ref="RX-PY-2", pathway=t.Pathway.IN_SERVICE, team="south", facts=[], plan=""), "u-asha", now
)

# No server reached: a transport failure, and nothing lost.
transport = Urllib(SERVER)
expect_error(t.TetherError.SignInNeeded, lambda: phone.sync(transport))
expect_error(t.TetherError.SignInNeeded, lambda: phone.sign_in(transport, USERNAME, "wrong password"))
phone.sign_in(transport, USERNAME, PASSWORD)
check(phone.signed_in_user() == USERNAME, "signed in")
expect_error(t.TetherError.TransportFailed, lambda: phone.sync(Urllib("http://127.0.0.1:9")))

# Sync with the real server: the episode goes up, the server's actions come back. While
# a request is in flight the core is free: the app reads its caseload meanwhile (with
# the lock held this would deadlock).
check(phone.server_actions(episode) is None, "no server actions before a sync")
read_meanwhile = []
transport.during = lambda: read_meanwhile.append(len(phone.next_actions(now)))
summary = phone.sync(transport)
transport.during = None
check(len(read_meanwhile) >= 1 and read_meanwhile[0] > 0, f"read during the sync: {read_meanwhile}")
check(summary.complete and summary.sent >= 1 and summary.round_trips >= 1, f"the sync: {summary}")
check([h.episode_id for h in summary.held_back] == [elsewhere], f"held back by name: {summary.held_back}")
check([h.episode_id for h in phone.held_back()] == [elsewhere], "and kept so")
check("RX-PY-2" not in summary.held_back[0].reason, "the reason holds no patient reference")
check("/v1/sync" in transport.paths, "the sync went through the host's transport")
server = phone.server_actions(episode)
check(server is not None and not server.provisional, "the server's actions")
codes = {a.code for a in server.actions}
check(t.ActionCode.LEAVE_CALLING_CARD in codes, f"the server knows of the card: {codes}")
local = phone.actions(episode, now)
check({a.id for a in server.actions} == {a.id for a in local.actions}, "the same actions on both sides")

# The server's receipt times came back with its answer: every record has one, at the
# sync (the records were made hours before it).
synced = datetime.datetime.now(datetime.timezone.utc)
received = [e.received_at for e in phone.timeline(episode)]
check(all(r is not None and now - datetime.timedelta(seconds=5) <= r <= synced + datetime.timedelta(seconds=5)
          for r in received), f"receipt times: {received}")

# Again: nothing new, one round trip.
again = phone.sync(transport)
check(again.round_trips == 1 and again.sent == 0, f"an up-to-date sync: {again}")

# Reopened, the store holds it all.
del phone
reopened = t.Tether.open(store, KEY)
check(len(reopened.timeline(episode)) == 4, "the records survive reopening")
check([e.received_at for e in reopened.timeline(episode)] == received, "so do their receipt times")
check(reopened.server_actions(episode) is not None, "so do the server's actions")

# A manager revokes the device: its next sync wipes the store and says so.
def manager_post(path, body, token=None):
    http = urllib.request.Request(SERVER + path, data=json.dumps(body).encode(), method="POST")
    http.add_header("Content-Type", "application/json")
    if token is not None:
        http.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(http, timeout=60) as response:
        return response.status, response.read()


_, tokens = manager_post("/v1/auth/login", {"username": MANAGER, "password": PASSWORD, "device_id": "base-pc"})
status, _ = manager_post(f"/v1/devices/{reopened.device_id()}/revoke", {}, json.loads(tokens)["access_token"])
check(200 <= status < 300, f"revoked: {status}")
expect_error(t.TetherError.WipeRequired, lambda: reopened.sync(transport))
check(not os.path.exists(os.path.join(store, "tether.db")), "the store is gone")
expect_error(t.TetherError.WipeRequired, lambda: reopened.next_actions(now))
reopened.wipe()  # again: no harm

print(f"test_ffi.py: {checks} checks passed")
