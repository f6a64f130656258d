// The Kotlin bindings over the real library, on the JVM (run by ffi/tests/bindings.rs).
// Environment: TETHER_SERVER (a real server on loopback), TETHER_USERNAME, TETHER_PASSWORD.

import java.net.HttpURLConnection
import java.net.URI
import java.nio.file.Files
import java.time.Duration
import java.time.Instant
import uniffi.tether.*

var checks = 0

fun check(condition: Boolean, what: () -> String) {
    if (!condition) throw AssertionError(what())
    checks++
}

inline fun <reified E : Throwable> expectError(call: () -> Unit): E {
    try {
        call()
    } catch (e: Throwable) {
        if (e is E) return e
        throw AssertionError("expected ${E::class.simpleName}, got $e")
    }
    throw AssertionError("expected ${E::class.simpleName}")
}

/** The host's HTTP stack: the JDK's, as an app would use OkHttp. */
class JdkTransport(private val base: String) : Transport {
    val paths = mutableListOf<String>()

    override fun post(request: HttpRequest): HttpResponse {
        paths.add(request.path)
        try {
            val http = URI(base + request.path).toURL().openConnection() as HttpURLConnection
            http.requestMethod = "POST"
            http.doOutput = true
            http.connectTimeout = 10_000
            http.readTimeout = 60_000
            http.setRequestProperty("Content-Type", request.contentType)
            request.bearer?.let { http.setRequestProperty("Authorization", "Bearer $it") }
            http.outputStream.use { it.write(request.body) }
            val status = http.responseCode
            val body = (if (status < 400) http.inputStream else http.errorStream)?.use { it.readBytes() } ?: ByteArray(0)
            return HttpResponse(status.toUShort(), body)
        } catch (e: java.io.IOException) {
            throw TransportException.Failed(e.toString())
        }
    }
}

fun main() {
    val server = System.getenv("TETHER_SERVER")
    val username = System.getenv("TETHER_USERNAME")
    val password = System.getenv("TETHER_PASSWORD")
    val key = ByteArray(32) { it.toByte() }
    val now = Instant.now()
    val store = Files.createTempDirectory("tether-kt").toString()

    val short = expectError<TetherException.InvalidInput> { Tether.open(store, ByteArray(5)) }
    check(short.field == "key") { "field ${short.field}" }

    val phone = Tether.open(store, key)
    expectError<TetherException.WrongKey> { Tether.open(store, ByteArray(32)) }

    // Records are by the signed-in user: sign in first, then everything works offline.
    val newEpisode = NewEpisode("RX-KT-1", Pathway.URGENT_REFERRAL, "north", listOf(FactValue.Risk(Risk.HIGH)), "")
    expectError<TetherException.SignInNeeded> { phone.openEpisode(newEpisode, now) }
    val transport = JdkTransport(server)
    expectError<TetherException.SignInNeeded> { phone.signIn(transport, username, "wrong password") }
    phone.signIn(transport, username, password)

    val episode = phone.openEpisode(newEpisode, now.minus(Duration.ofHours(3)))
    phone.record(
        episode,
        EventBody.AppointmentMissed(Appointment.INITIAL, MissReason.DID_NOT_ATTEND),
        now.minus(Duration.ofHours(2)),
        null,
    )
    val visit = phone.record(
        episode,
        EventBody.HomeVisit(false, VisitOutcome.NO_ANSWER, Location(51.5, -0.1, 12.0)),
        now.minus(Duration.ofMinutes(30)),
        null,
    )
    val card = phone.record(episode, EventBody.CallingCardLeft(visit), now.minus(Duration.ofMinutes(25)), null)

    val timeline = phone.timeline(episode)
    check(timeline.size == 3 && timeline[2].id == card) { "the timeline: $timeline" }
    check(timeline.all { it.by == username && it.device == phone.deviceId() }) { "stamped from the sign-in" }
    val body = timeline[1].body
    check(body is EventBody.HomeVisit && body.outcome == VisitOutcome.NO_ANSWER && body.location?.accuracy == 12.0) {
        "the visit reads back: $body"
    }

    val actions = phone.actions(episode, now)
    val cards = actions.actions.filter { it.code == ActionCode.LEAVE_CALLING_CARD }
    check(cards.size == 1 && cards[0].state == ActionState.DONE && cards[0].resolvedBy == card) { "the card: $cards" }
    val next = phone.nextActions(now)
    check(next.isNotEmpty() && next.all { it.episodeId == episode && it.patientRef == "RX-KT-1" }) { "next: $next" }
    check(next.map { it.action.due } == next.map { it.action.due }.sorted()) { "soonest first" }
    check(next.none { it.action.code == ActionCode.LEAVE_CALLING_CARD }) { "the card is not due" }
    val nextDue = phone.nextDue(now)
    check(nextDue != null && nextDue.episodeId == episode && !nextDue.due.isBefore(now)) { "next due: $nextDue" }

    val bad = expectError<TetherException.InvalidInput> {
        phone.record(episode, EventBody.CallingCardLeft("not-a-uuid"), now, null)
    }
    check(bad.field == "visit") { "field ${bad.field}" }
    check(phone.timeline(episode).size == 3) { "nothing stored" }
    expectError<TetherException.NotFound> { phone.timeline("0190f5a4-0000-7000-8000-000000000001") }

    expectError<TetherException.TransportFailed> { phone.sync(JdkTransport("http://127.0.0.1:9")) }

    val summary = phone.sync(transport)
    check(summary.complete && summary.sent >= 1u && summary.heldBack.isEmpty()) { "the sync: $summary" }
    check("/v1/sync" in transport.paths) { "the sync went through the host's transport" }
    val fromServer = phone.serverActions(episode)
    check(fromServer != null && !fromServer.provisional) { "the server's actions: $fromServer" }
    check(fromServer!!.actions.map { it.id }.toSet() == actions.actions.map { it.id }.toSet()) {
        "the same actions on both sides"
    }

    phone.wipe()
    expectError<TetherException.WipeRequired> { phone.nextActions(now) }
    println("TestFfi.kt: $checks checks passed")
}
