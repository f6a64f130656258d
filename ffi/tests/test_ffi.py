"""The Python bindings over the real library (run by ffi/tests/bindings.rs).

Environment: TETHER_BINDINGS (the generated module and the library), TETHER_SERVER (a
real server on loopback), TETHER_USERNAME, TETHER_MANAGER (a team manager of the same
team), TETHER_PASSWORD.

With TETHER_FFI_PART=oidc, only the sign-in with the trust's identity provider runs:
TETHER_OIDC_ISSUER (the test provider, whose /_control/person sets who signs in),
TETHER_OIDC_REDIRECT (the app's redirect URI), TETHER_OIDC_USERNAME (the username the
provider's person gets).
"""

import asyncio
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
    """The host's HTTP stack, async: urllib in a worker thread, as an app would await
    OkHttp, Ktor or URLSession. `during` (a coroutine function) runs while a request is
    in flight, before it is sent."""

    def __init__(self, base, during=None):
        self.base = base
        self.paths = []
        self.during = during

    async def post(self, request):
        self.paths.append(request.path)
        if self.during is not None:
            await self.during()
        return await asyncio.to_thread(self.send, request)

    def send(self, request):
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
        return said(error)
    raise AssertionError(f"expected {kind.__name__}")


async def expect_async_error(kind, call):
    try:
        await call()
    except kind as error:
        return said(error)
    raise AssertionError(f"expected {kind.__name__}")


def said(error):
    """Every error says what happened: its reason, and its text (`str`) with it."""
    check(len(error.reason) > 10 and error.reason in str(error), f"{type(error).__name__} says {str(error)!r}")
    return error


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def system_browser(url):
    """What Custom Tabs or ASWebAuthenticationSession do: open the provider's page, which
    (the test provider signs its person in at once) redirects straight back to the app."""
    try:
        urllib.request.build_opener(NoRedirect).open(url, timeout=60)
    except urllib.error.HTTPError as redirect:
        if redirect.code in (301, 302, 303, 307):
            return redirect.headers["Location"]
        raise
    raise AssertionError("the provider did not redirect back")


def control_provider(path, body):
    http = urllib.request.Request(os.environ["TETHER_OIDC_ISSUER"] + "/_control/" + path,
                                  data=json.dumps(body).encode(), method="POST")
    http.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(http, timeout=60) as response:
        return response.status


async def signs_in_with_the_identity_provider():
    store = tempfile.mkdtemp()
    transport = Urllib(SERVER)
    phone = t.Tether.open(store, KEY)
    check(phone.pending_identity_sign_in() is None, "nothing pending yet")
    await expect_async_error(t.TetherError.SignInNeeded,
                             lambda: phone.finish_identity_sign_in(transport, "x:/y?code=c"))

    # The server has one provider: the phone need not name it, nor its redirect URI.
    started = await phone.begin_identity_sign_in(transport, None, None)
    check(started.redirect_uri == os.environ["TETHER_OIDC_REDIRECT"], f"the app's redirect: {started}")
    check("code_challenge_method=S256" in started.authorization_url, "PKCE with S256")
    check("code_verifier" not in started.authorization_url, "the verifier stays on the phone")
    pending = phone.pending_identity_sign_in()
    check(pending is not None and pending.provider == started.provider, f"pending: {pending}")
    redirect = await asyncio.to_thread(system_browser, started.authorization_url)
    check(redirect.startswith(started.redirect_uri), f"back to the app: {redirect}")

    # The app is stopped while the browser is open, and started again: the sign-in is in
    # the store.
    del phone
    phone = t.Tether.open(store, KEY)
    username = await phone.finish_identity_sign_in(transport, redirect)
    check(username == os.environ["TETHER_OIDC_USERNAME"], f"signed in as {username}")
    check(phone.signed_in_user() == username, "the signed-in user")
    check(phone.pending_identity_sign_in() is None, "nothing pending after")
    check("/v1/auth/oidc/token" in transport.paths, "the code went to Tether, through the host's transport")
    summary = await phone.sync(transport)
    check(summary.complete and summary.round_trips == 1, f"a sync as the provider's person: {summary}")

    # The same redirect again: the sign-in has finished, and the phone says to start again.
    error = await expect_async_error(t.TetherError.SignInNeeded,
                                     lambda: phone.finish_identity_sign_in(transport, redirect))
    check("start again" in error.reason, error.reason)

    # A person Tether's mapping does not place: refused, and the reason names the code.
    control_provider("person", {"sub": "ffi-unplaced", "preferred_username": "nobody", "roles": ["Other"]})
    started = await phone.begin_identity_sign_in(transport, started.provider, started.redirect_uri)
    redirect = await asyncio.to_thread(system_browser, started.authorization_url)
    error = await expect_async_error(t.TetherError.SyncRefused, lambda: phone.finish_identity_sign_in(transport, redirect))
    check(error.status == 403 and error.code == "not_placed", f"refused: {error}")
    check("app roles Other" in error.reason, error.reason)
    check(phone.signed_in_user() == username, "still the first person")
    print(f"test_ffi.py (oidc): {checks} checks passed")


async def main():
    now = datetime.datetime.now(datetime.timezone.utc)
    store = tempfile.mkdtemp()

    # A key of the wrong length names the field.
    error = expect_error(t.TetherError.InvalidInput, lambda: t.Tether.open(store, b"short"))
    check(error.field == "key", f"field {error.field}")

    phone = t.Tether.open(store, KEY)
    check(len(phone.device_id()) == 36, "a device id")

    # Another key does not open the store.
    wrong = expect_error(t.TetherError.WrongKey, lambda: t.Tether.open(store, bytes(32)))
    check("key does not open" in str(wrong), f"the wrong key says so: {wrong}")
    print("a wrong key, as Python shows it:", repr(wrong))

    # Records are by the signed-in user: before any sign-in there is no one to stamp them with.
    new_episode = t.NewEpisode(patient_ref="RX-PY-0", pathway=t.Pathway.IN_SERVICE, team="north", facts=[], plan="")
    expect_error(t.TetherError.SignInNeeded, lambda: phone.open_episode(new_episode, now))
    transport = Urllib(SERVER)
    await expect_async_error(t.TetherError.SignInNeeded, lambda: phone.sync(transport))
    await expect_async_error(t.TetherError.SignInNeeded, lambda: phone.sign_in(transport, USERNAME, "wrong password"))
    await phone.sign_in(transport, USERNAME, PASSWORD)
    check(phone.signed_in_user() == USERNAME, "signed in")

    # Everything else works offline from here.
    episode = phone.open_episode(
        t.NewEpisode(
            patient_ref="RX-PY-1",
            pathway=t.Pathway.URGENT_REFERRAL,
            team="north",
            facts=[t.FactValue.RISK(value=t.Risk.HIGH)],
            plan="",
        ),
        now - datetime.timedelta(hours=3),
    )
    missed = phone.record(
        episode,
        t.EventBody.APPOINTMENT_MISSED(appointment=t.Appointment.INITIAL, reason=t.MissReason.DID_NOT_ATTEND),
        None,
        now - datetime.timedelta(hours=2),
    )
    visit = phone.record(
        episode,
        t.EventBody.HOME_VISIT(announced=False, outcome=t.VisitOutcome.NO_ANSWER, location=None),
        "nobody in; curtains drawn",
        now - datetime.timedelta(minutes=30),
    )
    # Episode first, then what, then when: by keyword too, the same names everywhere.
    card = phone.record(episode_id=episode, body=t.EventBody.CALLING_CARD_LEFT(visit=visit), note=None,
                        at=now - datetime.timedelta(minutes=25))

    # The records read back typed, in the order they happened.
    timeline = phone.timeline(episode)
    check([e.id for e in timeline] == [missed, visit, card], "the timeline")
    check(timeline[1].body == t.EventBody.HOME_VISIT(announced=False, outcome=t.VisitOutcome.NO_ANSWER, location=None),
          f"the visit reads back: {timeline[1].body}")
    check(timeline[1].note == "nobody in; curtains drawn", "the note")
    check(all(e.by == USERNAME and e.device == phone.device_id() for e in timeline), "stamped from the sign-in")
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
        lambda: phone.record(episode, t.EventBody.CALLING_CARD_LEFT(visit="not-a-uuid"), None, now),
    )
    check(error.field == "visit", f"field {error.field}")
    check("not-a-uuid" not in str(error), "the message does not repeat the value")
    error = expect_error(
        t.TetherError.InvalidInput,
        lambda: phone.record(
            episode,
            t.EventBody.DECISION(topic=t.Topic.COLD_CALL, outcome=t.DecisionOutcome.YES, rationale="  "),
            None,
            now,
        ),
    )
    check(error.field == "rationale", f"field {error.field}")
    error = expect_error(
        t.TetherError.InvalidInput, lambda: phone.record(episode, t.EventBody.REENGAGED(), "SECRET " * 2000, now)
    )
    check(error.field == "note" and "SECRET" not in str(error), f"a note past its limit: {error}")
    check(len(phone.timeline(episode)) == 3, "nothing stored")
    error = expect_error(
        t.TetherError.InvalidInput,
        lambda: phone.open_episode(t.NewEpisode(patient_ref=" ", pathway=t.Pathway.IN_SERVICE, team="north", facts=[],
                                                plan=""), now),
    )
    check(error.field == "patient_ref", f"field {error.field}")
    expect_error(
        t.TetherError.NotFound,
        lambda: phone.record("0190f5a4-0000-7000-8000-000000000001", t.EventBody.REENGAGED(), None, now),
    )

    # Facts and the plan, typed both ways.
    coordinator = t.FactValue.CARE_COORDINATOR(value="u-bea")
    changed = phone.set_fact(episode, coordinator, now - datetime.timedelta(minutes=20))
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
        t.NewEpisode(patient_ref="RX-PY-2", pathway=t.Pathway.IN_SERVICE, team="south", facts=[], plan=""), now
    )

    # No server reached: a transport failure, and nothing lost.
    await expect_async_error(t.TetherError.TransportFailed, lambda: phone.sync(Urllib("http://127.0.0.1:9")))

    # A sync cancelled while its request is in flight (the app closed the screen) loses
    # nothing, and leaves the core free.
    stuck = asyncio.Event()

    async def never_answers():
        stuck.set()
        await asyncio.sleep(3600)

    cancelled = asyncio.create_task(phone.sync(Urllib(SERVER, during=never_answers)))
    await stuck.wait()
    cancelled.cancel()
    try:
        await cancelled
        raise AssertionError("the sync should have been cancelled")
    except asyncio.CancelledError:
        pass
    check(len(phone.timeline(episode)) == 4, "nothing lost by a cancelled sync")

    # Sync with the real server: the episode goes up, the server's actions come back. The
    # sync is awaited on this one event loop, and while its request is in flight another
    # task on the same loop reads the caseload: the loop's thread is not blocked on the
    # network, and the core is free (the request waits for the read).
    check(phone.server_actions(episode) is None, "no server actions before a sync")
    read_meanwhile = []
    in_flight, read_done = asyncio.Event(), asyncio.Event()

    async def wait_for_the_read():
        in_flight.set()
        await read_done.wait()

    async def read_while_syncing():
        await in_flight.wait()
        read_meanwhile.append(len(phone.next_actions(now)))
        read_done.set()

    transport.during = wait_for_the_read
    summary, _ = await asyncio.gather(phone.sync(transport), read_while_syncing())
    transport.during = None
    check(len(read_meanwhile) == 1 and read_meanwhile[0] > 0, f"read during the sync: {read_meanwhile}")
    check(summary.complete and summary.sent >= 1 and summary.round_trips >= 1, f"the sync: {summary}")
    check([h.episode_id for h in summary.held_back] == [elsewhere], f"held back by name: {summary.held_back}")
    check([h.episode_id for h in phone.held_back()] == [elsewhere], "and kept so")
    held = summary.held_back[0]
    check(isinstance(held.reason, t.HoldReason.INVALID) and "team" in held.message, f"a typed reason: {held}")
    check("RX-PY-2" not in held.message and "RX-PY-2" not in held.reason.message, "the reason holds no patient reference")
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
    again = await phone.sync(transport)
    check(again.round_trips == 1 and again.sent == 0, f"an up-to-date sync: {again}")

    # A shift change: the manager signs in on the same phone, and what is recorded now is
    # theirs; the server takes it (they signed in here) with the practitioner's records.
    await phone.sign_in(transport, MANAGER, PASSWORD)
    handover = phone.record(episode, t.EventBody.REENGAGED(), None, now)
    check(phone.timeline(episode)[-1].id == handover and phone.timeline(episode)[-1].by == MANAGER, "by the manager")
    shift = await phone.sync(transport)
    # (A sign-in offers held-back episodes again: the south one goes, and is held back again.)
    check([h.episode_id for h in shift.held_back] == [elsewhere], f"the manager's record went up: {shift}")
    check(shift.sent == 2 and shift.complete, f"both episodes were offered: {shift}")

    # Closed, the store answers nothing more, and says why; reopened, it holds it all.
    phone.close()
    closed = expect_error(t.TetherError.Closed, lambda: phone.next_actions(now))
    check("closed" in str(closed), f"after close: {closed}")
    await expect_async_error(t.TetherError.Closed, lambda: phone.sync(transport))
    expect_error(t.TetherError.Closed, lambda: phone.record(episode, t.EventBody.REENGAGED(), None, now))
    phone.close()  # again: no harm
    reopened = t.Tether.open(store, KEY)
    check(len(reopened.timeline(episode)) == 5, "the records survive reopening")
    kept = [e.received_at for e in reopened.timeline(episode)]
    check(kept[:4] == received and kept[4] is not None, f"so do their receipt times: {kept}")
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
    await expect_async_error(t.TetherError.WipeRequired, lambda: reopened.sync(transport))
    check(not os.path.exists(os.path.join(store, "tether.db")), "the store is gone")
    expect_error(t.TetherError.WipeRequired, lambda: reopened.next_actions(now))
    reopened.wipe()  # again: no harm

    print(f"test_ffi.py: {checks} checks passed")


if os.environ.get("TETHER_FFI_PART") == "oidc":
    asyncio.run(signs_in_with_the_identity_provider())
else:
    asyncio.run(main())
