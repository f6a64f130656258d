//! Alerts to an urgent action's owner (`server::alerts`), end to end on a real database:
//! a home-treatment episode (Appendix A) raised at 09:00, the test clock moved through
//! its deadlines, the scheduled re-evaluation (`serve::reevaluate`) writing alerts to the
//! outbox and the outbox's worker sending them to a webhook receiver on loopback (an axum
//! server that checks each body's HMAC) and, in `needs_smtp`, to a real SMTP server
//! (Python's aiosmtpd) on loopback.
mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use episode::document::{EpisodeDoc, Opening};
use episode::{Event, Pathway, PatientRef};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use server::alerts::Alerts;
use server::alerts::send::AlertSender;
use server::outbox::{Policy, Worker};
use server::{app, episodes};

use common::{Server, backends};

const SECRET: &str = "the-receivers-shared-secret-0123456789";
const PATIENT: &str = "RX-ALERT-7731";

/// Each delivery at one path: its idempotency key and body.
type Deliveries = Vec<(String, Value)>;

/// What a webhook receiver got, by path.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<BTreeMap<String, Deliveries>>>);

impl Received {
    fn at(&self, path: &str) -> Vec<(String, Value)> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(path).cloned().unwrap_or_default()
    }

    /// The alerts at `path` as `code:moment`, in the order received.
    fn alerts(&self, path: &str) -> Vec<String> {
        self.at(path)
            .iter()
            .map(|(_, body)| {
                format!("{}:{}", body["action"]["code"].as_str().unwrap_or("?"), body["alert"].as_str().unwrap_or("?"))
            })
            .collect()
    }
}

/// A webhook receiver on loopback at `port` (0: any): it refuses a body whose signature
/// does not verify (and the test fails), and keeps the rest.
async fn receiver(port: u16, got: Received) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("a port");
    let port = listener.local_addr().expect("an address").port();
    let handler = move |axum::extract::Path(path): axum::extract::Path<String>, headers: HeaderMap, body: Bytes| {
        let got = got.clone();
        async move {
            let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).expect("a key");
            mac.update(&body);
            let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
            let signature = headers.get("x-tether-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
            assert_eq!(signature, format!("sha256={expected}"), "the signature verifies");
            let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).expect("a key").to_owned();
            let body: Value = serde_json::from_slice(&body).expect("a JSON body");
            assert_eq!(body["key"], key.as_str());
            got.0.lock().unwrap_or_else(PoisonError::into_inner).entry(path).or_default().push((key, body));
            StatusCode::NO_CONTENT
        }
    };
    let router = axum::Router::new().route("/{path}", axum::routing::post(handler));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (port, task)
}

/// The alerts file for `team-south`: the care coordinator, the team manager and the
/// on-call contact each at a path of the receiver at `port`.
fn alerts_file(port: u16, smtp: Option<u16>) -> Alerts {
    let hook = |path: &str| format!("webhook = \"http://127.0.0.1:{port}/{path}\"\nsecret_env = \"SECRET\"\n");
    let (smtp_section, email) = match smtp {
        Some(smtp) => (
            format!(
                "[smtp]\nhost = \"127.0.0.1\"\nport = {smtp}\nsecurity = \"none\"\nfrom = \"Tether <tether@trust.example>\"\n"
            ),
            true,
        ),
        None => (String::new(), false),
    };
    let mail = |who: &str| if email { format!("email = \"{who}@trust.example\"\n") } else { String::new() };
    let text = format!(
        "dashboard_url = \"https://tether.trust.example\"\n{smtp_section}\
         [teams.team-south]\nworking_hours = \"09:00-17:00\"\nlead_minutes = 15\n\
         [teams.team-south.on_call]\n{}{}\
         [teams.team-south.contacts.care_coordinator]\n{}{}\
         [teams.team-south.contacts.team_manager]\n{}{}",
        hook("on-call"),
        mail("on-call"),
        hook("cc"),
        mail("cc"),
        hook("tm"),
        mail("tm"),
    );
    Alerts::parse(&text, &|name| (name == "SECRET").then(|| SECRET.to_owned())).expect("the alerts file")
}

/// The server with `alerts`, and a worker that sends alerts at the test clock.
fn with_alerts(mut server: Server, alerts: Alerts) -> (Server, Worker) {
    server.state.alerts = Arc::new(alerts);
    server.app = app(server.state.clone());
    let policy = Policy { base: Duration::from_secs(30), lease: Duration::from_secs(300), ..Policy::default() };
    let worker = Worker::new(
        server.state.db.clone(),
        server.state.clock.clone(),
        AlertSender::both(&server.state.alerts),
        policy,
    );
    (server, worker)
}

/// A home-treatment episode of `team-south` whose patient did not answer a phone call at
/// the clock's moment: Appendix A's trigger.
fn home_treatment(server: &Server) -> episode::EpisodeId {
    let now = *server.now.lock().unwrap_or_else(PoisonError::into_inner);
    let id = episode::EpisodeId::from_uuid(uuid::Uuid::now_v7());
    let opening = Opening {
        id,
        patient_ref: PatientRef::new(PATIENT).expect("a reference"),
        team: "team-south".into(),
        opened_at: now - jiff::SignedDuration::from_hours(24),
        opened_by: "cai".into(),
        pathway: Pathway::HomeTreatment,
        facts: vec![],
        plan: String::new(),
    };
    let mut doc = EpisodeDoc::open(&opening, automerge::ActorId::random()).expect("a document");
    let Value::Object(fields) = json!({"method": "phone", "target": "patient", "outcome": "no_answer"}) else {
        unreachable!()
    };
    let call = Event::new_record(uuid::Uuid::now_v7().into(), "contact_attempt", now, "cai", "phone-cai", fields)
        .expect("a record");
    doc.record(&call).expect("recorded");
    server.db(|conn| {
        let mut tx = conn.transaction().expect("a transaction");
        episodes::insert(&mut *tx, id, &"team-south".parse().expect("a team"), &mut doc, now.as_second())
            .expect("stored");
        tx.commit().expect("committed");
    });
    id
}

/// Moves the clock on `minutes`, re-evaluates as the schedule does, and sends.
async fn tick(server: &Server, worker: &Arc<Worker>, minutes: i64) {
    server.advance(minutes * 60);
    server::serve::reevaluate(&server.state).await.expect("re-evaluated");
    let worker = Arc::clone(worker);
    tokio::task::spawn_blocking(move || worker.pass().expect("a pass")).await.expect("the pass");
}

/// The outbox's alert rows as (dedupe key, state, attempts).
fn outbox(server: &Server) -> Vec<(String, String, i64)> {
    server
        .rows("SELECT dedupe_key, state, attempts FROM outbox WHERE kind LIKE 'alert_%' ORDER BY dedupe_key")
        .into_iter()
        .map(|row| {
            let text = |i: usize| row[i].clone().unwrap_or_default();
            (text(0), text(1), text(2).parse().unwrap_or(-1))
        })
        .collect()
}

/// The episode's page on the dashboard, as `sol` (south's team manager) sees it.
async fn episode_page(server: &Server, episode: episode::EpisodeId) -> String {
    use axum::body::Body;
    use axum::http::{Method, Request, header};
    let cookie_of = |headers: &HeaderMap, name: &str| {
        headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(name))
            .and_then(|v| v.split(';').next())
            .map(str::to_owned)
            .expect("a cookie")
    };
    let get = |path: String, cookie: Option<String>| {
        let mut request = Request::builder().uri(path);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        request.body(Body::empty()).expect("a request")
    };
    let (_, headers, body) = server.send_raw(get("/dashboard/login".into(), None)).await;
    let page = String::from_utf8(body).expect("HTML");
    let login = cookie_of(&headers, "tether_login=");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).expect("a token");
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", csrf)
        .append_pair("username", "sol")
        .append_pair("password", common::PASSWORD)
        .finish();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/dashboard/login")
        .header(header::COOKIE, login)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .expect("a request");
    let (status, headers, _) = server.send_raw(request).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = cookie_of(&headers, "tether_session=");
    let (status, _, body) = server.send_raw(get(format!("/dashboard/episodes/{episode}"), Some(session))).await;
    assert_eq!(status, StatusCode::OK);
    String::from_utf8(body).expect("HTML")
}

backends!(; multi_thread:
    home_treatment_alerts_each_owner_once_through_one_two_and_four_hours,
    out_of_hours_the_on_call_contact_is_alerted,
    a_receiver_down_gets_the_alert_when_it_is_back,
    a_receiver_that_refuses_the_alert_fails_it_at_once,
    a_send_cut_short_by_a_crash_is_made_again_under_the_same_key,
);

async fn home_treatment_alerts_each_owner_once_through_one_two_and_four_hours() {
    let got = Received::default();
    let (port, _task) = receiver(0, got.clone()).await;
    let (server, worker) = with_alerts(Server::new(), alerts_file(port, None));
    let worker = Arc::new(worker);
    // Monday 2 March 2026, 09:00 in London (GMT): in working hours.
    let episode = home_treatment(&server);
    tick(&server, &worker, 0).await;
    let active_cc = ["phone_patient:active", "unannounced_home_visit:active", "consider_police_support:active"];
    let mut cc: Vec<String> = got.alerts("cc");
    cc.sort();
    let mut expected: Vec<String> = active_cc.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(cc, expected, "the care coordinator: the three urgent actions they own");
    assert_eq!(got.alerts("tm"), ["escalate_to_team_manager:active"], "the team manager: the escalation");
    assert!(got.alerts("on-call").is_empty(), "in hours the on-call contact is not alerted");

    // Evaluated again and again: nothing is sent twice.
    tick(&server, &worker, 1).await;
    tick(&server, &worker, 1).await;
    assert_eq!(got.at("cc").len(), 3);

    // 09:50: the phone call is due within the quarter hour.
    tick(&server, &worker, 48).await;
    assert_eq!(got.alerts("cc").last().map(String::as_str), Some("phone_patient:due_soon"));
    // 1 h: overdue.
    tick(&server, &worker, 11).await;
    assert_eq!(got.alerts("cc").last().map(String::as_str), Some("phone_patient:overdue"));
    // 2 h: the unannounced visit is overdue too.
    tick(&server, &worker, 60).await;
    assert_eq!(got.alerts("cc").last().map(String::as_str), Some("unannounced_home_visit:overdue"));
    // 4 h: the escalation and the police support.
    tick(&server, &worker, 120).await;
    assert_eq!(got.alerts("tm").last().map(String::as_str), Some("escalate_to_team_manager:overdue"));
    assert!(got.alerts("cc").contains(&"consider_police_support:overdue".to_owned()));

    // Each alert once, by its key; every row sent.
    for path in ["cc", "tm"] {
        let keys: Vec<String> = got.at(path).into_iter().map(|(key, _)| key).collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(keys.len(), unique.len(), "{path}: each once: {keys:?}");
    }
    let rows = outbox(&server);
    assert!(rows.iter().all(|(_, state, attempts)| state == "sent" && *attempts == 1), "{rows:?}");
    assert_eq!(rows.len(), got.at("cc").len() + got.at("tm").len());
    // No patient reference in any alert; a link to the episode instead.
    for (_, body) in got.at("cc").into_iter().chain(got.at("tm")) {
        assert!(!body.to_string().contains(PATIENT), "{body}");
        assert_eq!(body["episode_url"], format!("https://tether.trust.example/dashboard/episodes/{episode}"));
        assert_eq!(body["team"], "team-south");
    }
    // Every send is audited.
    assert_eq!(server.number("SELECT count(*) FROM audit WHERE action = 'outbox_sent'"), rows.len() as i64);
}

async fn out_of_hours_the_on_call_contact_is_alerted() {
    let got = Received::default();
    let (port, _task) = receiver(0, got.clone()).await;
    let (server, worker) = with_alerts(Server::new(), alerts_file(port, None));
    let worker = Arc::new(worker);
    // Monday 18:00 in London: out of hours.
    server.advance(9 * 3600);
    home_treatment(&server);
    tick(&server, &worker, 0).await;
    assert!(got.at("cc").is_empty() && got.at("tm").is_empty(), "nobody but on call out of hours");
    let on_call = got.alerts("on-call");
    assert_eq!(on_call.len(), 4, "{on_call:?}");
    assert!(got.at("on-call").iter().all(|(_, body)| body["contact"] == "on_call"));
    // The escalation is the on-call manager's out of hours (Appendix A).
    assert!(got.at("on-call").iter().any(|(_, b)| b["action"]["owner"] == "on_call_manager"));
}

async fn a_receiver_down_gets_the_alert_when_it_is_back() {
    // A port with nobody listening on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("an address").port();
    let (server, worker) = with_alerts(Server::new(), alerts_file(port, None));
    let worker = Arc::new(worker);
    let episode = home_treatment(&server);
    tick(&server, &worker, 0).await;
    let rows = outbox(&server);
    assert_eq!(rows.len(), 4);
    // The manager sees each alert retrying, and why.
    let page = episode_page(&server, episode).await;
    assert_eq!(page.matches("data-state=\"retrying\"").count(), 4, "{page}");
    assert!(page.contains("could not be reached"));
    assert!(rows.iter().all(|(_, state, attempts)| state == "retrying" && *attempts == 1), "{rows:?}");
    let retries = server.number("SELECT count(*) FROM audit WHERE action = 'outbox_retry'");
    assert_eq!(retries, 4, "each failed attempt is audited");
    // Before the backoff is over nothing is tried.
    tick(&server, &worker, 0).await;
    assert!(outbox(&server).iter().all(|(_, _, attempts)| *attempts == 1));

    // Back up; a minute later (past the first backoff) each is delivered, once.
    let got = Received::default();
    let (_, _task) = receiver(port, got.clone()).await;
    tick(&server, &worker, 1).await;
    let rows = outbox(&server);
    assert!(rows.iter().all(|(_, state, attempts)| state == "sent" && *attempts == 2), "{rows:?}");
    assert_eq!(got.at("cc").len() + got.at("tm").len(), 4);
    let page = episode_page(&server, episode).await;
    assert_eq!(page.matches("data-state=\"sent\"").count(), 4, "{page}");
    assert!(page.contains("Phone the patient") || page.contains("phone"), "the action is named");
}

async fn a_receiver_that_refuses_the_alert_fails_it_at_once() {
    // The receiver answers 404 (a path it does not have): no use trying again.
    let got = Received::default();
    let (port, _task) = receiver(0, got.clone()).await;
    let mut alerts = alerts_file(port, None);
    let south = alerts.teams.get_mut("team-south").expect("south");
    for contact in south.contacts.values_mut().chain(std::iter::once(&mut south.on_call)) {
        if let Some(hook) = &mut contact.webhook {
            hook.url = format!("http://127.0.0.1:{port}/nowhere/at/all");
        }
    }
    let (server, worker) = with_alerts(Server::new(), alerts);
    let worker = Arc::new(worker);
    let episode = home_treatment(&server);
    tick(&server, &worker, 0).await;
    let rows = outbox(&server);
    assert!(rows.iter().all(|(_, state, attempts)| state == "failed" && *attempts == 1), "{rows:?}");
    assert_eq!(server.number("SELECT count(*) FROM audit WHERE action = 'outbox_failed'"), 4);
    let page = episode_page(&server, episode).await;
    assert_eq!(page.matches("data-state=\"failed\"").count(), 4, "{page}");
    assert!(page.contains("answered 404"), "{page}");
    assert!(!page.contains(SECRET));
}

async fn a_send_cut_short_by_a_crash_is_made_again_under_the_same_key() {
    let got = Received::default();
    let (port, _task) = receiver(0, got.clone()).await;
    let (server, worker) = with_alerts(Server::new(), alerts_file(port, None));
    let worker = Arc::new(worker);
    home_treatment(&server);
    server::serve::reevaluate(&server.state).await.expect("re-evaluated");
    // A worker claims the alerts and sends them, and dies before it marks them sent.
    let now = server.state.clock.now().as_millisecond();
    let claimed = server.db(|conn| conn.claim_outbox("alert_webhook", now, now + 300_000, 100).expect("claimed"));
    assert_eq!(claimed.len(), 4);
    let senders = AlertSender::both(&server.state.alerts);
    let sender = Arc::clone(&senders[0]);
    let sent = tokio::task::spawn_blocking(move || sender.send(&claimed)).await.expect("the send");
    assert!(sent.is_ok());
    assert_eq!(got.at("cc").len() + got.at("tm").len(), 4);
    // Within the dead worker's lease nobody sends them again ...
    tick(&server, &worker, 1).await;
    assert_eq!(got.at("cc").len() + got.at("tm").len(), 4);
    assert!(outbox(&server).iter().all(|(_, state, _)| state == "sending"));
    // ... after it, they are sent again, under the same keys, and marked sent.
    tick(&server, &worker, 6).await;
    let all: Vec<(String, Value)> = got.at("cc").into_iter().chain(got.at("tm")).collect();
    assert_eq!(all.len(), 8);
    let mut keys: Vec<&str> = all.iter().map(|(key, _)| key.as_str()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 4, "a receiver that keeps the keys takes each alert once");
    assert!(outbox(&server).iter().all(|(_, state, _)| state == "sent"));
}

/// With a real SMTP server: Python's aiosmtpd on loopback (`TETHER_SMTP_PYTHON`, or
/// `target/smtp-venv/bin/python`).
mod needs_smtp {
    use super::*;

    /// An SMTP server on loopback that writes each message it takes to a file in `dir`.
    struct Smtp {
        child: std::process::Child,
        port: u16,
        dir: tempfile::TempDir,
    }

    impl Drop for Smtp {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    const SCRIPT: &str = r#"
import sys, time, pathlib, itertools
from aiosmtpd.controller import Controller
out = pathlib.Path(sys.argv[1]); counter = itertools.count()
class Keep:
    async def handle_DATA(self, server, session, envelope):
        (out / f"{next(counter):04}.eml").write_bytes(b"To: " + ",".join(envelope.rcpt_tos).encode() + b"\n" + envelope.content)
        return "250 OK"
c = Controller(Keep(), hostname="127.0.0.1", port=int(sys.argv[2]))
c.start()
print(sys.argv[2], flush=True)
while True: time.sleep(3600)
"#;

    fn python() -> String {
        std::env::var("TETHER_SMTP_PYTHON")
            .unwrap_or_else(|_| format!("{}/../target/smtp-venv/bin/python", env!("CARGO_MANIFEST_DIR")))
    }

    fn smtp() -> Smtp {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("a directory");
        let mut child = std::process::Command::new(python())
            .args(["-c", SCRIPT])
            .arg(dir.path())
            .arg(std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port().to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("aiosmtpd cannot start ({e}): python3 -m venv target/smtp-venv && target/smtp-venv/bin/pip install aiosmtpd==1.4.6"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("its port");
        let port =
            line.trim().parse().unwrap_or_else(|_| panic!("aiosmtpd gave no port: {line:?} (is aiosmtpd installed?)"));
        Smtp { child, port, dir }
    }

    fn mails(smtp: &Smtp) -> Vec<String> {
        let mut files: Vec<_> =
            std::fs::read_dir(smtp.dir.path()).expect("the directory").flatten().map(|e| e.path()).collect();
        files.sort();
        files.iter().map(|f| std::fs::read_to_string(f).expect("a message")).collect()
    }

    backends!(; multi_thread: each_alert_is_emailed_once_to_its_owner_and_out_of_hours_to_on_call);

    async fn each_alert_is_emailed_once_to_its_owner_and_out_of_hours_to_on_call() {
        let smtp = smtp();
        let got = Received::default();
        let (port, _task) = receiver(0, got.clone()).await;
        let (server, worker) = with_alerts(Server::new(), alerts_file(port, Some(smtp.port)));
        let worker = Arc::new(worker);
        home_treatment(&server);
        tick(&server, &worker, 0).await;
        tick(&server, &worker, 61).await;
        tick(&server, &worker, 1).await;
        let mails = mails(&smtp);
        // Four active, and the phone call overdue: five, each once, to its owner.
        assert_eq!(mails.len(), 5, "{mails:#?}");
        let to = |who: &str| mails.iter().filter(|m| m.starts_with(&format!("To: {who}@"))).count();
        assert_eq!((to("cc"), to("tm"), to("on-call")), (4, 1, 0));
        let mut ids: Vec<&str> = mails
            .iter()
            .filter_map(|m| m.lines().find(|l| l.to_ascii_lowercase().starts_with("message-id:")))
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 5, "one Message-ID per alert");
        assert!(
            mails
                .iter()
                .all(|m| !m.contains(PATIENT) && m.contains("https://tether.trust.example/dashboard/episodes/"))
        );
        assert!(mails.iter().any(|m| m.contains("OVERDUE") && m.contains("phone_patient")));
        // The webhook got the same alerts.
        assert_eq!(got.at("cc").len() + got.at("tm").len(), 5);

        // Out of hours (18:00): the on-call address.
        server.advance(7 * 3600);
        home_treatment(&server);
        tick(&server, &worker, 0).await;
        let mails = super::needs_smtp::mails(&smtp);
        assert!(mails.iter().filter(|m| m.starts_with("To: on-call@")).count() >= 4, "{mails:#?}");
    }
}
