// The Kotlin bindings over the real library, on the JVM (run by ffi/tests/bindings.rs).
// Environment: TETHER_SERVER (a real server on loopback), TETHER_USERNAME, TETHER_PASSWORD.

import java.net.HttpURLConnection
import java.net.URI
import java.nio.file.Files
import java.time.Duration
import java.time.Instant
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
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

/** An exception's message and its text both say what happened. */
fun said(e: Throwable, words: String) {
    check(e.message?.contains(words) == true) { "${e::class.simpleName}'s message: ${e.message}" }
    check(e.toString().contains(words)) { "${e::class.simpleName} as text: $e" }
}

/**
 * The host's HTTP stack, as a suspend function: the JDK's blocking client on
 * Dispatchers.IO, as an app would use OkHttp or Ktor. `inFlight` is completed while a
 * request is under way and `release` awaited before it is sent, so that the test can
 * act meanwhile.
 */
class JdkTransport(private val base: String) : Transport {
    val paths = mutableListOf<String>()
    var inFlight: CompletableDeferred<Unit>? = null
    var release: CompletableDeferred<Unit>? = null

    override suspend fun post(request: HttpRequest): HttpResponse {
        paths.add(request.path)
        inFlight?.complete(Unit)
        release?.await()
        return withContext(Dispatchers.IO) {
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
                val body =
                    (if (status < 400) http.inputStream else http.errorStream)?.use { it.readBytes() } ?: ByteArray(0)
                HttpResponse(status.toUShort(), body)
            } catch (e: java.io.IOException) {
                throw TransportException.Failed(e.toString())
            }
        }
    }
}

suspend inline fun <reified E : Throwable> expectSuspended(crossinline call: suspend () -> Unit): E {
    try {
        call()
    } catch (e: Throwable) {
        if (e is E) return e
        throw AssertionError("expected ${E::class.simpleName}, got $e")
    }
    throw AssertionError("expected ${E::class.simpleName}")
}

// One thread runs every coroutine here (runBlocking's event loop): if an async call
// blocked it during a request, nothing else could run until the answer came.
fun main() = runBlocking {
    val server = System.getenv("TETHER_SERVER")
    val username = System.getenv("TETHER_USERNAME")
    val password = System.getenv("TETHER_PASSWORD")
    val key = ByteArray(32) { it.toByte() }
    val now = Instant.now()
    val store = Files.createTempDirectory("tether-kt").toString()

    val short = expectError<TetherException.InvalidInput> { Tether.open(store, ByteArray(5)) }
    check(short.field == "key") { "field ${short.field}" }
    said(short, "32 bytes")

    val phone = Tether.open(store, key)
    // Every error says what happened, those without data of their own too.
    said(expectError<TetherException.WrongKey> { Tether.open(store, ByteArray(32)) }, "the key does not open")

    // Records are by the signed-in user: sign in first, then everything works offline.
    val newEpisode = NewEpisode("RX-KT-1", Pathway.URGENT_REFERRAL, "north", listOf(FactValue.Risk(Risk.HIGH)), "")
    said(expectError<TetherException.SignInNeeded> { phone.openEpisode(newEpisode, now) }, "sign in")
    val transport = JdkTransport(server)
    expectSuspended<TetherException.SignInNeeded> { phone.signIn(transport, username, "wrong password") }
    phone.signIn(transport, username, password)

    // Episode first, then what, then when: the same order in every call that changes one.
    val episode = phone.openEpisode(newEpisode, now.minus(Duration.ofHours(3)))
    phone.record(
        episode,
        EventBody.AppointmentMissed(Appointment.INITIAL, MissReason.DID_NOT_ATTEND),
        null,
        now.minus(Duration.ofHours(2)),
    )
    val visit = phone.record(
        episode,
        EventBody.HomeVisit(false, VisitOutcome.NO_ANSWER, Location(51.5, -0.1, 12.0)),
        "nobody in",
        now.minus(Duration.ofMinutes(30)),
    )
    val card = phone.record(episode, EventBody.CallingCardLeft(visit), null, now.minus(Duration.ofMinutes(25)))
    phone.setFact(episode, FactValue.CareCoordinator("u-bea"), now.minus(Duration.ofMinutes(20)))
    phone.setPlan(episode, "Phone the sister.", now.minus(Duration.ofMinutes(19)))

    val timeline = phone.timeline(episode)
    check(timeline.size == 4 && timeline[2].id == card) { "the timeline: $timeline" }
    check(timeline[1].note == "nobody in") { "the note: ${timeline[1].note}" }
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

    val bad = expectError<TetherException.InvalidInput> {
        phone.record(episode, EventBody.CallingCardLeft("not-a-uuid"), null, now)
    }
    check(bad.field == "visit") { "field ${bad.field}" }
    said(bad, "visit")
    check(phone.timeline(episode).size == 4) { "nothing stored" }
    said(expectError<TetherException.NotFound> { phone.timeline("0190f5a4-0000-7000-8000-000000000001") }, "no episode")

    said(
        expectSuspended<TetherException.TransportFailed> { phone.sync(JdkTransport("http://127.0.0.1:9")) },
        "could not be reached",
    )

    // A sync awaited while this one thread reads the caseload: the request is held until
    // the read is done, which it could not be if the sync held the thread or the core.
    transport.inFlight = CompletableDeferred()
    transport.release = CompletableDeferred()
    val syncing = async { phone.sync(transport) }
    transport.inFlight!!.await()
    val readMeanwhile = phone.nextActions(now).size
    transport.release!!.complete(Unit)
    val summary = syncing.await()
    transport.inFlight = null
    transport.release = null
    check(readMeanwhile > 0) { "read during the sync: $readMeanwhile" }
    check(summary.complete && summary.sent >= 1u && summary.heldBack.isEmpty()) { "the sync: $summary" }
    check("/v1/sync" in transport.paths) { "the sync went through the host's transport" }
    val fromServer = phone.serverActions(episode)
    check(fromServer != null && !fromServer.provisional) { "the server's actions: $fromServer" }
    check(fromServer!!.actions.map { it.id }.toSet() == actions.actions.map { it.id }.toSet()) {
        "the same actions on both sides"
    }

    // closeStore() closes the store at once: every later call says so, and the store
    // opens again with everything in it.
    phone.closeStore()
    said(expectError<TetherException.Closed> { phone.nextActions(now) }, "closed")
    said(expectSuspended<TetherException.Closed> { phone.sync(transport) }, "closed")
    phone.closeStore()
    // AutoCloseable: `use` frees the object, after which it refuses every call.
    val reopened = Tether.open(store, key)
    reopened.use { check(it.timeline(episode).size == 4) { "the records survive closing" } }
    val destroyed = expectError<IllegalStateException> { reopened.nextActions(now) }
    check(destroyed.message?.contains("destroyed") == true) { "after close(): ${destroyed.message}" }

    val last = Tether.open(store, key)
    last.wipe()
    said(expectError<TetherException.WipeRequired> { last.nextActions(now) }, "wipe")
    println("TestFfi.kt: $checks checks passed")
}
