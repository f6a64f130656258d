//! The dashboard (`/dashboard…`) through `app(state)` and `oneshot`, on a database seeded
//! by `tether serve --demo`'s seeder, with a clock the tests move: sign-in and its
//! throttle, the session cookie, the pages, the forms and their CSRF tokens, and the audit
//! log of every read and write.

mod common;

use std::sync::PoisonError;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use jiff::SignedDuration;
use server::caseload;
use tower::ServiceExt;

use common::{DEMO_START, Demo as Dash};

/// A signed-in browser: its cookie (`name=value`) and the CSRF token its pages carry.
struct Session {
    cookie: String,
    csrf: String,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn set_cookie(&self) -> Option<&str> {
        self.headers.get(header::SET_COOKIE).and_then(|v| v.to_str().ok())
    }
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

/// The text between `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(&text[from..to])
}

/// Every value of `attribute="…"` in `html`, in order.
fn attributes<'a>(html: &'a str, attribute: &str) -> Vec<&'a str> {
    let needle = format!("{attribute}=\"");
    html.match_indices(&needle)
        .filter_map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

/// A section of a page, by its id.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    between(html, &format!("<section id=\"{id}\">"), "</section>").unwrap_or_else(|| panic!("no section {id}"))
}

/// The `tether_session` cookie an answer sets.
fn session_cookie(answer: &Answer) -> &str {
    answer
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("tether_session="))
        .expect("a session cookie")
}

fn sets_session(answer: &Answer) -> bool {
    answer.headers.get_all(header::SET_COOKIE).iter().any(|v| v.as_bytes().starts_with(b"tether_session="))
}

impl Dash {
    async fn send(&self, method: Method, path: &str, cookie: Option<&str>, body: Option<String>) -> Answer {
        self.send_with(method, path, cookie, body, &[]).await
    }

    async fn send_with(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        body: Option<String>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let request = request.body(body.map_or_else(Body::empty, Body::from)).expect("a request");
        let response = self.app.clone().oneshot(request).await.expect("a response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("the body");
        Answer { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() }
    }

    async fn get(&self, path: &str, session: &Session) -> Answer {
        self.send(Method::GET, path, Some(&session.cookie), None).await
    }

    async fn post(&self, path: &str, session: &Session, pairs: &[(&str, &str)]) -> Answer {
        self.send(Method::POST, path, Some(&session.cookie), Some(form(pairs))).await
    }

    /// Opens the sign-in form: its CSRF token, and the cookie (`name=value`) that carries it.
    async fn open_login(&self) -> (String, String) {
        let page = self.send(Method::GET, "/dashboard/login", None, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let cookie = page.set_cookie().expect("the form's cookie").split(';').next().expect("name=value").to_owned();
        assert!(cookie.starts_with("tether_login="), "{cookie}");
        let csrf = between(&page.body, "name=\"csrf\" value=\"", "\"").expect("the form's token").to_owned();
        (cookie, csrf)
    }

    /// Opens the sign-in form and posts it.
    async fn login_form(&self, username: &str, password: &str) -> Answer {
        self.login_form_with(username, password, &[]).await
    }

    async fn login_form_with(&self, username: &str, password: &str, extra: &[(&str, &str)]) -> Answer {
        let (cookie, csrf) = self.open_login().await;
        let body = form(&[("csrf", &csrf), ("username", username), ("password", password)]);
        self.send_with(Method::POST, "/dashboard/login", Some(&cookie), Some(body), extra).await
    }

    /// Signs a demo user in through the form; returns the browser's session.
    async fn sign_in(&self, username: &str) -> Session {
        let answer = self.login_form(username, &self.passwords[username]).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        assert_eq!(answer.location(), "/dashboard");
        let cookie = session_cookie(&answer).split(';').next().expect("name=value").to_owned();
        let page = self.send(Method::GET, "/dashboard", Some(&cookie), None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let csrf = between(&page.body, "name=\"csrf\" value=\"", "\"").expect("a CSRF token in the page").to_owned();
        Session { cookie, csrf }
    }

    fn id_of(&self, patient: &str) -> String {
        // Demo references are plain letters, digits and dashes.
        assert!(patient.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        let rows = self.rows(&format!("SELECT episode FROM summaries WHERE patient_ref = '{patient}'"));
        rows.first().and_then(|row| row[0].clone()).expect("the demo episode")
    }

    /// The episode's audit entries: (via, action, device, username).
    fn audit(&self, id: &str) -> Vec<(String, String, String, String)> {
        let id: episode::EpisodeId = id.parse().expect("an id");
        self.db(move |conn| {
            server::audit::entries(conn, id)
                .expect("the audit log")
                .into_iter()
                .map(|e| {
                    let via = serde_json::to_value(e.via).expect("json").as_str().expect("a name").to_owned();
                    (via, e.action, e.device, e.username)
                })
                .collect()
        })
    }
}

async fn the_sign_in_form_refuses_a_wrong_password_and_sends_the_signed_out_to_it() {
    let dash = Dash::new();
    let page = dash.send(Method::GET, "/dashboard/login", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers[header::CONTENT_TYPE].to_str().expect("text").starts_with("text/html"));
    assert!(page.body.contains("<form method=\"post\" action=\"/dashboard/login\""), "{}", page.body);
    assert!(page.body.contains("name=\"password\""));
    assert!(!page.body.contains("<script"), "the dashboard has no JavaScript");
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    assert!(page.headers[header::CONTENT_SECURITY_POLICY].to_str().expect("text").contains("default-src 'none'"));

    let wrong = dash.login_form("maya", "not her password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(!sets_session(&wrong), "no session for a wrong password");
    assert!(wrong.body.contains("The username or the password is wrong."), "{}", wrong.body);
    let unknown = dash.login_form("nobody", "whatever").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(unknown.body.contains("The username or the password is wrong."));

    for path in ["/dashboard", "/dashboard/episodes/0190c7a0-0000-7000-8000-000000000000"] {
        let answer = dash.send(Method::GET, path, None, None).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(answer.location(), "/dashboard/login", "{path}");
    }
    let forged = dash.send(Method::GET, "/dashboard", Some("tether_session=00ff00ff"), None).await;
    assert_eq!(forged.location(), "/dashboard/login", "an unknown token signs no one in");
}

async fn a_sign_in_form_without_its_own_token_is_refused_before_the_password_is_checked() {
    let dash = Dash::new();
    let right = dash.passwords["maya"].clone();
    let (cookie, csrf) = dash.open_login().await;
    let (_, other) = dash.open_login().await;
    let attempts = [
        (None, Some(csrf.as_str())),   // the form without its cookie (another site's form)
        (Some(cookie.as_str()), None), // the cookie without the form's token
        (Some(cookie.as_str()), Some(other.as_str())), // another form's token
    ];
    for (cookie, token) in attempts {
        let mut pairs = vec![("username", "maya"), ("password", right.as_str())];
        if let Some(token) = token {
            pairs.push(("csrf", token));
        }
        let answer = dash.send(Method::POST, "/dashboard/login", cookie, Some(form(&pairs))).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{cookie:?} {token:?}");
        assert!(!sets_session(&answer), "no session");
        assert!(answer.body.contains("Sign in again"), "{}", answer.body);
    }
    let failures = dash.number("SELECT COUNT(*) FROM login_failures");
    assert_eq!(failures, 0, "a refused form is not a failed sign-in");
    dash.sign_in("maya").await;
}

async fn a_sign_in_token_only_the_server_could_make_is_accepted() {
    let dash = Dash::new();
    let right = dash.passwords["maya"].clone();
    let post = |cookie: String, token: String, extra: Vec<(&'static str, &'static str)>| {
        let body = form(&[("csrf", &token), ("username", "maya"), ("password", &right)]);
        let dash = &dash;
        async move { dash.send_with(Method::POST, "/dashboard/login", Some(&cookie), Some(body), &extra).await }
    };
    // A double submit that merely matches: whoever can plant a cookie could send it.
    let planted = "f".repeat(64);
    let answer = post(format!("tether_login={planted}"), planted.clone(), vec![]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "a cookie equal to the field is not enough");
    // The form of the server's shape, under a key the server does not hold.
    let other_keys = server::auth::token::Keys::from_secret(b"not the server's key, 32 bytes or more");
    let issued: i64 = dash.now.lock().expect("the clock").as_second();
    let message = format!("tether-login\0{planted}\0{issued}");
    let forged = format!(
        "{issued}.{}",
        server::auth::token::to_hex(&server::auth::token::hmac(other_keys.form_key(), message.as_bytes()))
    );
    let answer = post(format!("tether_login={planted}"), forged, vec![]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "an HMAC under another key");
    // A genuine form, once it is older than its time.
    let (cookie, csrf) = dash.open_login().await;
    dash.advance(server::dashboard::session::LOGIN_TTL_SECS + 1);
    assert_eq!(post(cookie, csrf, vec![]).await.status, StatusCode::FORBIDDEN, "an expired form");
    // A genuine form posted from another site, as the browser says.
    let (cookie, csrf) = dash.open_login().await;
    let answer = post(cookie.clone(), csrf.clone(), vec![("sec-fetch-site", "cross-site")]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "a cross-site form");
    // The same form from this site signs in.
    let answer = post(cookie, csrf, vec![("sec-fetch-site", "same-origin")]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert!(sets_session(&answer));
}

async fn failed_dashboard_sign_ins_lock_the_username_out_from_that_client() {
    let dash = Dash::new();
    for _ in 0..server::auth::store::FREE_FAILURES {
        assert_eq!(dash.login_form("maya", "wrong").await.status, StatusCode::UNAUTHORIZED);
    }
    let right = &dash.passwords["maya"];
    let locked = dash.login_form("maya", right).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS, "{}", locked.body);
    assert!(locked.headers.contains_key(header::RETRY_AFTER));
    assert!(locked.body.contains("Too many failed sign-ins for this username from here"), "{}", locked.body);
    assert!(!sets_session(&locked));
    // The JSON sign-in shares the throttle.
    let body = serde_json::json!({"username": "maya", "password": right, "device_id": "desk-maya"}).to_string();
    let request = Request::post("/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("a request");
    let response = dash.app.clone().oneshot(request).await.expect("a response");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // Once the lockout has passed, the right password signs in.
    dash.advance(server::auth::store::MAX_LOCK_SECS + 1);
    dash.sign_in("maya").await;
}

async fn the_session_cookie_is_http_only_strict_and_kept_only_hashed() {
    let dash = Dash::new();
    let answer = dash.login_form("maya", &dash.passwords["maya"]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let cookie = session_cookie(&answer);
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert!(attributes[0].starts_with("tether_session="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(attributes.contains(&attribute), "{attribute} in {cookie}");
    }
    assert!(!attributes.contains(&"Secure"), "plain HTTP on loopback: a Secure cookie would be dropped");
    let token = attributes[0].trim_start_matches("tether_session=").to_owned();
    assert_eq!(token.len(), 64, "32 random bytes in hex");
    let stored: Vec<String> =
        dash.rows("SELECT hash FROM dashboard_sessions").into_iter().flatten().flatten().collect();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], token, "the token is stored hashed");

    // Behind a TLS-terminating proxy, the cookie is Secure.
    let proxied = dash.login_form_with("maya", &dash.passwords["maya"], &[("x-forwarded-proto", "https")]).await;
    assert_eq!(proxied.status, StatusCode::SEE_OTHER, "{}", proxied.body);
    assert!(session_cookie(&proxied).split(';').any(|a| a.trim() == "Secure"));
}

async fn the_caseload_shows_overdue_actions_first_then_by_owner_and_the_rates() {
    let dash = Dash::new();
    let maya = dash.sign_in("maya").await;
    let page = dash.get("/dashboard", &maya).await;
    assert_eq!(page.status, StatusCode::OK);
    let actions = section(&page.body, "actions");
    let states = attributes(actions, "data-state");
    assert!(states.contains(&"overdue") && states.contains(&"open"), "{states:?}");
    let first_open = states.iter().position(|s| *s == "open").expect("an open action");
    assert!(states[..first_open].iter().all(|s| *s == "overdue"), "overdue first: {states:?}");
    assert!(states[first_open..].iter().all(|s| *s == "open"), "{states:?}");
    // The rows are the caseload's open clinical actions, in its order (overdue, owner,
    // due); the records to file have their own section.
    let expected: Vec<String> = dash.db(|conn| {
        caseload::open_actions(conn, &["north".parse().expect("a team")])
            .expect("actions")
            .into_iter()
            .filter(|a| a.code != "file_to_epr")
            .map(|a| a.action)
            .collect()
    });
    let shown: Vec<&str> = attributes(actions, "href").into_iter().filter_map(|h| h.split("#action-").nth(1)).collect();
    assert_eq!(shown, expected);

    // Only the caller's team.
    assert!(page.body.contains("DEMO-1003") && page.body.contains("DEMO-1004"));
    assert!(!page.body.contains("DEMO-2001"), "another team's episode");
    let episodes = section(&page.body, "episodes");
    assert_eq!(attributes(episodes, "data-state").len(), 6, "north's six episodes");

    let rates = section(&page.body, "rates");
    assert!(rates.contains("North Community Mental Health Team"), "{rates}");
    let not_brought = between(rates, "data-rate=\"not_brought\">", "</p>").expect("the not brought rate");
    let rates_now = dash.db(|conn| {
        caseload::rates(conn, &"north".parse().expect("a team"), DEMO_START.parse().expect("a time"), 90)
            .expect("rates")
    });
    assert!(rates_now.appointments > 0);
    assert!(
        not_brought
            .starts_with(&format!("Not brought: {} of {} appointments", rates_now.not_brought, rates_now.appointments)),
        "{not_brought}"
    );
    assert!(not_brought.contains("reference: 1 in 10 (10%)"), "{not_brought}");
    assert!(rates.contains(&format!("Did not attend: {} of {}", rates_now.did_not_attend, rates_now.appointments)));
}

async fn the_caseload_leads_with_clinical_actions_and_groups_the_records_to_file_per_episode() {
    let dash = Dash::new();
    let maya = dash.sign_in("maya").await;
    let page = dash.get("/dashboard", &maya).await;
    let all = dash.db(|conn| caseload::open_actions(conn, &["north".parse().expect("a team")]).expect("actions"));
    let filing: Vec<&caseload::OpenAction> = all.iter().filter(|a| a.code == "file_to_epr").collect();
    // In the demo, filing is most of what is open (an action per record): it buried the
    // clinical actions.
    assert!(filing.len() * 2 > all.len() && filing.len() < all.len(), "{} of {}", filing.len(), all.len());

    // The action list is the clinical actions alone, overdue first, and comes first.
    let actions = section(&page.body, "actions");
    let shown: Vec<&str> = attributes(actions, "href").into_iter().filter_map(|h| h.split("#action-").nth(1)).collect();
    assert_eq!(shown.len(), all.len() - filing.len());
    assert!(filing.iter().all(|a| !shown.contains(&a.action.as_str())), "no filing among the clinical actions");
    assert!(!actions.contains("File the record in the electronic patient record"), "{actions}");
    let at = |id: &str| page.body.find(&format!("<section id=\"{id}\">")).expect("the section");
    assert!(at("actions") < at("filing") && at("filing") < at("episodes"), "clinical actions lead the caseload");

    // One line an episode: "N records to file", linking to the episode page's form.
    let grouped = section(&page.body, "filing");
    let episodes = attributes(grouped, "data-episode");
    let mut expected: Vec<(String, usize)> = Vec::new();
    for action in &filing {
        match expected.iter_mut().find(|(e, _)| *e == action.episode.to_string()) {
            Some((_, n)) => *n += 1,
            None => expected.push((action.episode.to_string(), 1)),
        }
    }
    assert_eq!(episodes.len(), expected.len(), "{grouped}");
    for (episode, records) in &expected {
        assert!(episodes.contains(&episode.as_str()), "{episode}");
        let noun = if *records == 1 { "record" } else { "records" };
        let link = format!("<a href=\"/dashboard/episodes/{episode}#unfiled\">{records} {noun} to file</a>");
        assert!(grouped.contains(&link), "{link} in {grouped}");
    }
    let summary = format!("{} records to file across {} episodes", filing.len(), expected.len());
    assert!(grouped.contains(&summary), "{summary} in {grouped}");
    // Overdue filing lines first.
    let states = attributes(grouped, "data-state");
    let first_open = states.iter().position(|s| *s == "open").unwrap_or(states.len());
    assert!(states[first_open..].iter().all(|s| *s == "open"), "{states:?}");

    // The episode page files them together, under one reference, in one record.
    let (episode, records) = expected.iter().max_by_key(|(_, n)| *n).expect("an episode to file");
    let page = dash.get(&format!("/dashboard/episodes/{episode}"), &maya).await;
    let unfiled = section(&page.body, "unfiled");
    let ticked = attributes(unfiled, "data-record");
    assert_eq!(ticked.len(), *records);
    assert_eq!(unfiled.matches("type=\"checkbox\" name=\"record\"").count(), *records);
    let mut form: Vec<(&str, &str)> = vec![("csrf", &maya.csrf), ("epr_ref", "EPR-BATCH-7")];
    form.extend(ticked.iter().map(|r| ("record", *r)));
    let answer = dash.post(&format!("/dashboard/episodes/{episode}/filed"), &maya, &form).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let page = dash.get(&format!("/dashboard/episodes/{episode}"), &maya).await;
    assert!(section(&page.body, "unfiled").contains("Nothing to file."));
    let writes = dash.audit(episode).into_iter().filter(|(_, action, ..)| action == "record_event").count();
    assert_eq!(writes, 1, "one filed_to_epr for them all");
    let page = dash.get("/dashboard", &maya).await;
    assert!(!attributes(section(&page.body, "filing"), "data-episode").contains(&episode.as_str()));
}

async fn the_episode_page_shows_facts_conflicts_actions_and_the_merged_timeline() {
    let dash = Dash::new();
    let maya = dash.sign_in("maya").await;
    let id = dash.id_of("DEMO-1003");
    let page = dash.get(&format!("/dashboard/episodes/{id}"), &maya).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = &page.body;
    assert!(html.contains("<h1>Episode DEMO-1003</h1>"), "{html}");

    let conflicts = section(html, "conflicts");
    assert!(conflicts.contains("data-field=\"risk\""), "{conflicts}");
    assert!(conflicts.contains(&format!("action=\"/dashboard/episodes/{id}/facts\"")));
    let values = attributes(conflicts, "value");
    assert!(values.contains(&"&quot;high&quot;") && values.contains(&"&quot;low&quot;"), "{values:?}");
    assert!(html.contains("data-warning=\"fact_conflict\""));

    let actions = section(html, "actions");
    assert!(actions.contains("Policy section "), "each action cites its section");
    assert!(actions.contains("(20"), "due in UTC beside London time");
    let triggers: Vec<&str> =
        attributes(actions, "href").into_iter().filter_map(|h| h.strip_prefix("#record-")).collect();
    assert!(!triggers.is_empty(), "actions link to their trigger records");

    let timeline = section(html, "timeline");
    let records = attributes(timeline, "data-kind");
    let events = dash.number(&format!("SELECT COUNT(*) FROM receipts WHERE episode = '{id}'")) as usize;
    assert_eq!(records.len(), events, "every record, once");
    for trigger in &triggers {
        assert!(timeline.contains(&format!("id=\"record-{trigger}\"")), "the trigger is in the timeline");
    }
    for text in ["Appointment missed", "Contact attempt", "Fact changed", "phone-ana", "phone-ben", "Received"] {
        assert!(timeline.contains(text), "{text} in the timeline");
    }
    assert!(timeline.contains("no answer"), "values in words");

    // A visit's location is shown.
    let visit = dash.get(&format!("/dashboard/episodes/{}", dash.id_of("DEMO-1002")), &maya).await;
    assert!(section(&visit.body, "timeline").contains("53.48080, -2.24260 (within 25 m)"), "{}", visit.body);
}

async fn a_record_with_a_skewed_clock_carries_a_note_in_the_timeline() {
    let dash = Dash::new();
    let maya = dash.sign_in("maya").await;
    let id = dash.id_of("DEMO-1001");
    // A record made "an hour from now" by a device whose clock runs fast, stored as its
    // sync would store it.
    let later: jiff::Timestamp =
        *dash.now.lock().unwrap_or_else(PoisonError::into_inner) + SignedDuration::from_hours(1);
    let now_ms = dash.state.clock.now().as_millisecond();
    let episode: episode::EpisodeId = id.parse().expect("an id");
    let fields = serde_json::json!({"method": "phone", "target": "patient", "outcome": "no_answer"});
    let record = dash.db(move |conn| {
        let mut tx = conn.transaction().expect("a transaction");
        let actor = server::episodes::server_actor(&mut *tx).expect("the actor");
        let mut stored = server::episodes::load(&mut *tx, episode, &actor).expect("load").expect("the episode");
        let fields = fields.as_object().expect("an object").clone();
        let event = episode::Event::new_record(
            uuid::Uuid::now_v7().into(),
            "contact_attempt",
            later,
            "ana",
            "phone-fast",
            fields,
        )
        .expect("a record");
        stored.with_doc(|doc| doc.record(&event)).expect("recorded");
        let bytes = server::episodes::pending_changes(&mut stored).expect("within the budget");
        server::episodes::store_changes(
            &mut *tx,
            &mut stored,
            &bytes,
            &"phone-fast".parse().expect("a device id"),
            now_ms,
        )
        .expect("stored");
        tx.commit().expect("commit");
        event.id
    });
    let page = dash.get(&format!("/dashboard/episodes/{id}"), &maya).await;
    let item = between(&page.body, &format!("id=\"record-{record}\""), "</li>").expect("the record");
    assert!(item.contains("data-warning=\"clock_skew\""), "{item}");
    assert!(item.contains("Check the clock of phone-fast"), "{item}");
}

async fn another_teams_episode_answers_as_one_that_does_not_exist() {
    let dash = Dash::new();
    let maya = dash.sign_in("maya").await;
    let south = dash.id_of("DEMO-2001");
    let theirs = dash.get(&format!("/dashboard/episodes/{south}"), &maya).await;
    let unknown = dash.get("/dashboard/episodes/0190c7a0-0000-7000-8000-000000000000", &maya).await;
    let malformed = dash.get("/dashboard/episodes/not-an-id", &maya).await;
    for answer in [&theirs, &unknown, &malformed] {
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert!(answer.body.contains("There is no such episode among your teams"), "{}", answer.body);
    }
    assert_eq!(theirs.body, unknown.body, "the same page for both");
    assert!(!theirs.body.contains("DEMO-2001"));
    // Nor can a form change it.
    let post = dash
        .post(
            &format!("/dashboard/episodes/{south}/facts"),
            &maya,
            &[("csrf", &maya.csrf), ("field", "risk"), ("value", "\"high\"")],
        )
        .await;
    assert_eq!(post.status, StatusCode::NOT_FOUND);
    assert!(dash.audit(&south).iter().all(|(via, ..)| via != "dashboard"));
}

async fn a_form_without_the_sessions_csrf_token_is_refused_and_changes_nothing() {
    let dash = Dash::new();
    let maya = dash.sign_in("maya").await;
    let ben = dash.sign_in("ben").await;
    let id = dash.id_of("DEMO-1003");
    let path = format!("/dashboard/episodes/{id}/facts");
    let wrong = "0".repeat(maya.csrf.len());
    for csrf in [None, Some(wrong.as_str()), Some(ben.csrf.as_str()), Some("")] {
        let mut pairs = vec![("field", "risk"), ("value", "\"low\"")];
        if let Some(csrf) = csrf {
            pairs.push(("csrf", csrf));
        }
        let answer = dash.post(&path, &maya, &pairs).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{csrf:?}");
        assert!(answer.body.contains("nothing was changed"), "{}", answer.body);
    }
    let filed = dash.post(&format!("/dashboard/episodes/{id}/filed"), &maya, &[("epr_ref", "EPR-1")]).await;
    assert_eq!(filed.status, StatusCode::FORBIDDEN);
    let logout = dash.post("/dashboard/logout", &maya, &[("csrf", &wrong)]).await;
    assert_eq!(logout.status, StatusCode::FORBIDDEN);

    let page = dash.get(&format!("/dashboard/episodes/{id}"), &maya).await;
    assert!(section(&page.body, "conflicts").contains("data-field=\"risk\""), "the conflict is still there");
    let writes: Vec<_> = dash
        .audit(&id)
        .into_iter()
        .filter(|(_, action, ..)| action == "set_fact" || action == "record_event")
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(dash.get("/dashboard", &maya).await.status, StatusCode::OK, "the session survives");
}

async fn resolving_a_conflict_through_the_form_sets_the_fact_and_says_who() {
    let dash = Dash::new();
    let maya = dash.sign_in("maya").await;
    let id = dash.id_of("DEMO-1003");
    let page = dash.get(&format!("/dashboard/episodes/{id}"), &maya).await;
    let conflicts = section(&page.body, "conflicts");
    let action = between(conflicts, "<form class=\"row\" method=\"post\" action=\"", "\"").expect("the form");
    let answer = dash.post(action, &maya, &[("csrf", &maya.csrf), ("field", "risk"), ("value", "\"high\"")]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    // Back to the episode's page, which says what was done.
    let landed = answer.location().to_owned();
    let record = between(&landed, &format!("/dashboard/episodes/{id}?done="), "#done").expect("the record made");
    let page = dash.get(landed.split('#').next().expect("a path"), &maya).await;
    let notice = between(&page.body, "<div class=\"done\" id=\"done\" role=\"status\"", "</div>").expect("a notice");
    assert!(notice.contains("Saved.") && notice.contains("Risk is now <strong>high</strong>"), "{notice}");
    assert!(notice.contains("Recorded by maya") && notice.contains(&format!("#record-{record}")), "{notice}");
    assert!(section(&page.body, "timeline").contains(&format!("id=\"record-{record}\"")));

    let page = dash.get(&format!("/dashboard/episodes/{id}"), &maya).await;
    assert!(!page.body.contains("id=\"done\""), "no notice without a change");
    assert!(section(&page.body, "conflicts").contains("No conflicts."), "{}", page.body);
    let facts = section(&page.body, "facts");
    assert!(between(facts, "<dt>Risk</dt><dd>", "</dd>") == Some("high"), "{facts}");
    let timeline = section(&page.body, "timeline");
    assert!(timeline.contains("maya on server:"), "the server is the change's device: {timeline}");

    // A value that is not JSON, or not the fact's, is refused and stores nothing.
    let bad = dash.post(action, &maya, &[("csrf", &maya.csrf), ("field", "risk"), ("value", "very")]).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let bad = dash.post(action, &maya, &[("csrf", &maya.csrf), ("field", "risk"), ("value", "\"extreme\"")]).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("Not saved"), "{}", bad.body);
    let sets = dash.audit(&id).into_iter().filter(|(_, action, ..)| action == "set_fact").count();
    assert_eq!(sets, 1);
}

async fn filing_a_record_through_the_form_records_filed_to_epr() {
    let dash = Dash::new();
    let maya = dash.sign_in("maya").await;
    let id = dash.id_of("DEMO-1001");
    let page = dash.get(&format!("/dashboard/episodes/{id}"), &maya).await;
    let unfiled = section(&page.body, "unfiled");
    let records = attributes(unfiled, "data-record");
    assert!(!records.is_empty(), "{unfiled}");
    let record = records[0].to_owned();
    let path = format!("/dashboard/episodes/{id}/filed");

    let empty = dash.post(&path, &maya, &[("csrf", &maya.csrf), ("record", &record), ("epr_ref", "  ")]).await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    let stranger = uuid::Uuid::now_v7().to_string();
    let unknown = dash.post(&path, &maya, &[("csrf", &maya.csrf), ("record", &stranger), ("epr_ref", "EPR-9")]).await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY, "a record of no episode of hers");

    let answer = dash.post(&path, &maya, &[("csrf", &maya.csrf), ("record", &record), ("epr_ref", "EPR-4471")]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let landed = answer.location().to_owned();
    assert!(landed.starts_with(&format!("/dashboard/episodes/{id}?done=")), "{landed}");
    let page = dash.get(landed.split('#').next().expect("a path"), &maya).await;
    let notice = between(&page.body, "id=\"done\"", "</div>").expect("a notice");
    assert!(notice.contains("1 record filed under EPR reference <strong>EPR-4471</strong>"), "{notice}");
    // The same page for someone else, or with a record that is not theirs, says nothing.
    let ben = dash.sign_in("ben").await;
    assert!(!dash.get(landed.split('#').next().expect("a path"), &ben).await.body.contains("id=\"done\""));
    let other = format!("/dashboard/episodes/{id}?done={record}");
    assert!(!dash.get(&other, &maya).await.body.contains("id=\"done\""), "a record maya did not make");
    let nonsense = dash.get(&format!("/dashboard/episodes/{id}?done=%3Cscript%3E"), &maya).await;
    assert_eq!(nonsense.status, StatusCode::OK);
    assert!(!nonsense.body.contains("id=\"done\"") && !nonsense.body.contains("<script>"));
    assert!(!attributes(section(&page.body, "unfiled"), "data-record").contains(&record.as_str()), "filed");
    let timeline = section(&page.body, "timeline");
    assert!(timeline.contains("data-kind=\"filed_to_epr\"") && timeline.contains("EPR-4471"), "{timeline}");
    let records_written = dash.audit(&id).into_iter().filter(|(_, action, ..)| action == "record_event").count();
    assert_eq!(records_written, 1);
}

async fn every_dashboard_read_and_write_is_in_the_audit_log() {
    let dash = Dash::new();
    let maya = dash.sign_in("maya").await; // sign_in reads the caseload once
    let conflict = dash.id_of("DEMO-1003");
    dash.get(&format!("/dashboard/episodes/{conflict}"), &maya).await;
    let answer = dash
        .post(
            &format!("/dashboard/episodes/{conflict}/facts"),
            &maya,
            &[("csrf", &maya.csrf), ("field", "risk"), ("value", "\"high\"")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let entries: Vec<_> = dash.audit(&conflict).into_iter().filter(|(via, ..)| via == "dashboard").collect();
    let actions: Vec<&str> = entries.iter().map(|(_, action, ..)| action.as_str()).collect();
    assert_eq!(actions, ["list_episode", "read_episode", "set_fact"]);
    for (_, _, device, username) in &entries {
        assert!(device.starts_with("dashboard:"), "{device}");
        assert_eq!(username, "maya");
    }
    // Every episode the caseload showed was noted as read.
    for patient in ["DEMO-1001", "DEMO-1002", "DEMO-1004", "DEMO-1005", "DEMO-1006"] {
        let logged = dash.audit(&dash.id_of(patient));
        assert!(logged.iter().any(|(via, action, ..)| via == "dashboard" && action == "list_episode"), "{patient}");
    }
    // Two sign-ins are two devices.
    let again = dash.sign_in("maya").await;
    dash.get(&format!("/dashboard/episodes/{conflict}"), &again).await;
    let devices: std::collections::HashSet<String> = dash
        .audit(&conflict)
        .into_iter()
        .filter(|(via, ..)| via == "dashboard")
        .map(|(_, _, device, _)| device)
        .collect();
    assert_eq!(devices.len(), 2);
}

async fn signing_out_ends_the_session() {
    let dash = Dash::new();
    let maya = dash.sign_in("maya").await;
    let answer = dash.post("/dashboard/logout", &maya, &[("csrf", &maya.csrf)]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.location(), "/dashboard/login");
    assert!(answer.set_cookie().expect("the cookie is cleared").contains("Max-Age=0"));
    let after = dash.get("/dashboard", &maya).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "the old cookie signs no one in");
    assert_eq!(after.location(), "/dashboard/login");
    let rows = dash.number("SELECT COUNT(*) FROM dashboard_sessions");
    assert_eq!(rows, 0);
}

async fn a_session_ends_when_it_expires_or_its_user_is_disabled() {
    let dash = Dash::new();
    let maya = dash.sign_in("maya").await;
    let ben = dash.sign_in("ben").await;
    dash.db(|conn| {
        let mut tx = conn.transaction().expect("a transaction");
        server::accounts::set_disabled(&mut *tx, &"ben".parse().expect("a name"), true, 0).expect("disable");
        tx.commit().expect("commit");
    });
    assert_eq!(dash.get("/dashboard", &ben).await.location(), "/dashboard/login", "disabled");
    // Enabled again, ben signs in anew; his old cookie stays signed out.
    dash.db(|conn| {
        let mut tx = conn.transaction().expect("a transaction");
        server::accounts::set_disabled(&mut *tx, &"ben".parse().expect("a name"), false, 0).expect("enable");
        tx.commit().expect("commit");
    });
    assert_eq!(dash.get("/dashboard", &ben).await.location(), "/dashboard/login", "not revived");
    dash.sign_in("ben").await;
    assert_eq!(dash.get("/dashboard", &maya).await.status, StatusCode::OK);
    dash.advance(server::dashboard::session::SESSION_TTL_SECS + 1);
    assert_eq!(dash.get("/dashboard", &maya).await.location(), "/dashboard/login", "expired");
}

/// Sign-in settings with one provider that cannot be reached (nothing listens on port 9
/// of loopback) and passwords switched off.
fn providers_only(dir: &std::path::Path) -> server::oidc::SignIn {
    let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/oidc/testdata/client-key.pem");
    std::fs::write(
        dir.join("mapping.toml"),
        "[[rule]]\napp_role = \"Tether\"\nteams = [\"north\"]\nrole = \"practitioner\"\n",
    )
    .expect("the mapping");
    let settings = format!(
        r#"passwords = false
mapping = "mapping.toml"
[[provider]]
id = "trust"
name = "Trust IdP"
issuer = "http://127.0.0.1:9"
client_id = "tether"
private_key_file = "{}"
private_key_id = "tether-1"
redirect_uri = "http://127.0.0.1:8080/dashboard/oidc/callback"
phone_redirect_uris = ["uk.nhs.example.tether:/oidc"]
"#,
        key.display()
    );
    std::fs::write(dir.join("oidc.toml"), settings).expect("the settings");
    server::oidc::SignIn::load(&dir.join("oidc.toml")).expect("valid settings")
}

async fn with_passwords_off_only_the_providers_are_offered_and_every_password_sign_in_is_refused() {
    let mut dash = Dash::new();
    let sign_in = providers_only(dash.dir.path());
    dash.app = server::app(dash.state.clone().with_sign_in(sign_in));

    let page = dash.send(Method::GET, "/dashboard/login", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("href=\"/dashboard/oidc/trust/start\""), "{}", page.body);
    assert!(page.body.contains("Sign in with Trust IdP"));
    assert!(!page.body.contains("type=\"password\""), "no password form: {}", page.body);

    // Refused before anything else, even with the form's own cookie and token.
    let login = dash.send(Method::GET, "/dashboard/login", None, None).await;
    let cookie = login.set_cookie().and_then(|c| c.split(';').next()).expect("the form's cookie").to_owned();
    let csrf = cookie.trim_start_matches("tether_login=").to_owned();
    let form_answer = dash
        .send(
            Method::POST,
            "/dashboard/login",
            Some(&cookie),
            Some(form(&[("csrf", &csrf), ("username", "maya"), ("password", &dash.passwords["maya"])])),
        )
        .await;
    assert_eq!(form_answer.status, StatusCode::FORBIDDEN);
    assert!(form_answer.body.contains("Password sign-in is switched off"), "{}", form_answer.body);
    assert!(!sets_session(&form_answer));

    let api = Request::post("/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::json!({"username": "maya", "password": dash.passwords["maya"], "device_id": "d1"}).to_string(),
        ))
        .expect("a request");
    let response = dash.app.clone().oneshot(api).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["error"]["code"], "passwords_off");

    // The provider cannot be reached: a page that says so, and nothing kept.
    let start = dash.send(Method::GET, "/dashboard/oidc/trust/start", None, None).await;
    assert_eq!(start.status, StatusCode::BAD_GATEWAY, "{}", start.body);
    assert!(start.body.contains("Trust IdP: ") && start.body.contains("could not be reached"), "{}", start.body);
    assert_eq!(dash.send(Method::GET, "/dashboard/oidc/other/start", None, None).await.status, StatusCode::NOT_FOUND);

    // An answer for no sign-in started here.
    let callback = dash.send(Method::GET, "/dashboard/oidc/callback?state=made-up&code=c", None, None).await;
    assert_eq!(callback.status, StatusCode::BAD_REQUEST);
    assert!(callback.body.contains("expired or was already used"), "{}", callback.body);
    assert!(!sets_session(&callback));

    // The client's public key is published for registration with the provider.
    let jwks = Request::get("/v1/auth/oidc/jwks").body(Body::empty()).expect("a request");
    let response = dash.app.clone().oneshot(jwks).await.expect("an answer");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body");
    let jwks: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(jwks["keys"][0]["kid"], "tether-1");
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    assert!(jwks["keys"][0].get("d").is_none(), "never the private half: {jwks}");
}

/// The rows of a table's body, as HTML.
fn rows(html: &str) -> Vec<&str> {
    let body = between(html, "<tbody>", "</tbody>").unwrap_or("");
    body.split("<tr ").skip(1).collect()
}

/// The role a row's owner cell names, in words ("care coordinator").
fn role_of(row: &str) -> &str {
    let role = between(row, "<span class=\"role\">(", ")").expect("the role beside the names");
    role.split(';').next().expect("a role")
}

/// The people a row's owner cell names.
fn people_of(row: &str) -> &str {
    between(row, "<td class=\"owner\" data-label=\"Owner\"><span><strong>", "</strong>").expect("names")
}

async fn each_open_action_names_the_people_who_answer_for_it_beside_its_role() {
    let dash = Dash::new();
    let maya = dash.sign_in("maya").await;
    let page = dash.get("/dashboard", &maya).await;
    let actions = rows(section(&page.body, "actions"));
    assert!(actions.len() > 3, "{}", page.body);
    let mut roles = std::collections::BTreeSet::new();
    for row in &actions {
        let (role, people) = (role_of(row), people_of(row));
        roles.insert(role.to_owned());
        let patient = between(row, "data-label=\"Patient\"><a href=\"", "</a>").expect("the patient");
        match role {
            // DEMO-1003 and DEMO-1004 have ana as their care coordinator; the others have
            // none, so whoever opened them (maya) answers, and the cell says why.
            "care coordinator" | "assessor" | "responsible clinician" => {
                if patient.ends_with("DEMO-1003") || patient.ends_with("DEMO-1004") {
                    assert_eq!(people, "ana", "{row}");
                } else {
                    assert_eq!(people, "maya", "{row}");
                    assert!(row.contains("no care coordinator set: opened the episode"), "{row}");
                }
            }
            "team manager" | "on call manager" => assert_eq!(people, "maya", "north's manager: {row}"),
            "visitor" => assert!(["ana", "ben"].contains(&people), "who made the visit: {row}"),
            other => panic!("an unexpected role {other}: {row}"),
        }
    }
    assert!(roles.len() >= 2, "the demo's open actions have several roles: {roles:?}");

    // The episode page names them too, every action, done ones included.
    let id = dash.id_of("DEMO-1004");
    let page = dash.get(&format!("/dashboard/episodes/{id}"), &maya).await;
    let table = section(&page.body, "actions");
    let owners: Vec<&str> = rows(table).into_iter().map(people_of).collect();
    assert!(!owners.is_empty() && owners.iter().all(|p| ["ana", "maya", "Team base"].contains(p)), "{owners:?}");
    assert!(table.contains("<strong>ana</strong> <span class=\"role\">(care coordinator)"), "{table}");
    assert!(table.contains("<strong>Team base</strong> <span class=\"role\">(team base)"), "files the records");
}

async fn the_caseload_filters_by_overdue_urgent_owner_and_pathway_through_a_get_form() {
    let dash = Dash::new();
    let maya = dash.sign_in("maya").await;
    let page = dash.get("/dashboard", &maya).await;
    let form = between(&page.body, "<form class=\"filters\"", "</form>").expect("the filters' form");
    assert!(form.contains("method=\"get\" action=\"/dashboard\""), "{form}");
    for name in ["overdue", "urgent", "owner", "pathway"] {
        assert!(form.contains(&format!("name=\"{name}\"")), "{name} in {form}");
    }
    let all = rows(section(&page.body, "actions")).len();

    let overdue = dash.get("/dashboard?overdue=1", &maya).await;
    let shown = rows(section(&overdue.body, "actions"));
    let expected = dash.db(|conn| {
        caseload::open_actions(conn, &["north".parse().expect("a team")])
            .expect("actions")
            .into_iter()
            .filter(|a| a.overdue && a.code != "file_to_epr")
            .count()
    });
    assert!(expected > 0 && expected < all, "{expected} of {all}");
    assert_eq!(shown.len(), expected);
    assert!(shown.iter().all(|r| r.starts_with("data-state=\"overdue\"")));
    assert!(overdue.body.contains(&format!("of {all} (filtered)")), "says it is filtered");
    assert!(overdue.body.contains("name=\"overdue\" value=\"1\" checked"), "the form keeps the choice");
    assert!(attributes(section(&overdue.body, "filing"), "data-state").iter().all(|s| *s == "overdue"));

    let urgent = dash.get("/dashboard?urgent=on", &maya).await;
    let shown = rows(section(&urgent.body, "actions"));
    assert!(!shown.is_empty() && shown.iter().all(|r| r.contains("data-priority=\"urgent\"")), "{}", urgent.body);
    assert!(section(&urgent.body, "filing").contains("Nothing to file."), "filing is never urgent");

    let ana = dash.get("/dashboard?owner=ana", &maya).await;
    let shown = rows(section(&ana.body, "actions"));
    assert!(!shown.is_empty() && shown.len() < all);
    assert!(shown.iter().all(|r| people_of(r).split(", ").any(|p| p == "ana")), "{shown:?}");
    // Her episodes only, in the episode list.
    let episodes = section(&ana.body, "episodes");
    assert!(episodes.contains("DEMO-1004") && !episodes.contains("DEMO-1001"), "{episodes}");

    let base = dash.get("/dashboard?owner=team+base", &maya).await;
    assert!(rows(section(&base.body, "actions")).is_empty(), "the team base owns no clinical action");
    assert!(!attributes(section(&base.body, "filing"), "data-episode").is_empty(), "it files the records");

    let home = dash.get("/dashboard?pathway=home_treatment&owner=", &maya).await;
    let episodes = section(&home.body, "episodes");
    assert_eq!(attributes(episodes, "data-state").len(), 1, "{episodes}");
    assert!(episodes.contains("DEMO-1004"));
    assert!(rows(section(&home.body, "actions")).iter().all(|r| r.contains("DEMO-1004")));

    for (query, named) in
        [("pathway=walking", "pathway"), ("colour=red", "filters"), ("overdue=1&overdue=1", "filters")]
    {
        let answer = dash.get(&format!("/dashboard?{query}"), &maya).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(answer.body.contains(named), "{query}: {}", answer.body);
    }
    // A long name is refused, not echoed.
    let long = "x".repeat(500);
    let answer = dash.get(&format!("/dashboard?owner={long}"), &maya).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(!answer.body.contains(&long));
}

async fn managers_read_the_teams_audit_log_a_page_at_a_time_and_no_one_else_does() {
    let dash = Dash::new();
    let maya = dash.sign_in("maya").await;
    let ben = dash.sign_in("ben").await;
    // Some reads, so that the log has more than a page of north's entries.
    for patient in ["DEMO-1001", "DEMO-1002", "DEMO-1003"] {
        for _ in 0..10 {
            dash.get(&format!("/dashboard/episodes/{}", dash.id_of(patient)), &ben).await;
        }
    }
    let caseload = dash.get("/dashboard", &maya).await;
    assert!(caseload.body.contains("<a href=\"/dashboard/audit\">Audit log</a>"));
    assert!(!dash.get("/dashboard", &ben).await.body.contains("/dashboard/audit"), "not for practitioners");
    let refused = dash.get("/dashboard/audit", &ben).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("only a team manager or an admin may read the audit log"), "{}", refused.body);

    let page = dash.get("/dashboard/audit", &maya).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let audit = section(&page.body, "audit");
    let numbers: Vec<i64> = attributes(audit, "data-n").iter().map(|n| n.parse().expect("a number")).collect();
    assert_eq!(numbers.len(), 50, "a page");
    assert!(numbers.windows(2).all(|w| w[0] > w[1]), "newest first: {numbers:?}");
    let south: Vec<String> = ["DEMO-2001", "DEMO-2002", "DEMO-2003"].iter().map(|p| dash.id_of(p)).collect();
    assert!(south.iter().all(|id| !audit.contains(id.as_str())), "only north's episodes");
    assert!(audit.contains("<td data-label=\"Who\">ben</td>"), "everyone's reads: {audit}");

    let older = between(audit, "<a rel=\"next\" href=\"", "\"").expect("older entries").replace("&amp;", "&");
    let next = dash.get(&older, &maya).await;
    let more: Vec<i64> =
        attributes(section(&next.body, "audit"), "data-n").iter().map(|n| n.parse().expect("a number")).collect();
    assert!(!more.is_empty() && more[0] < numbers[49], "{more:?}");

    // One episode's log, linked from its page.
    let id = dash.id_of("DEMO-1003");
    let episode = dash.get(&format!("/dashboard/episodes/{id}"), &maya).await;
    assert!(episode.body.contains(&format!("href=\"/dashboard/audit?episode={id}\"")));
    let narrowed = dash.get(&format!("/dashboard/audit?episode={id}"), &maya).await;
    let entries = section(&narrowed.body, "audit");
    let linked: Vec<&str> = attributes(entries, "title");
    assert!(!linked.is_empty() && linked.iter().all(|e| *e == id), "{linked:?}");
    // Another team's episode is no episode; a malformed cursor is refused.
    let theirs = dash.get(&format!("/dashboard/audit?episode={}", south[0]), &maya).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(dash.get("/dashboard/audit?before=-3", &maya).await.status, StatusCode::BAD_REQUEST);

    // Reading the log is in the log: the narrowed read names the episode.
    let reads = dash.audit(&id).into_iter().filter(|(via, action, ..)| via == "dashboard" && action == "read_audit");
    assert_eq!(reads.count(), 1);
}

/// Automatic filing's failures show on the caseload, on the episode's line of records to
/// file: "retrying" while attempts remain, then "failed", with the reason (the EPR's
/// status, never its words).
async fn filing_failures_show_on_the_episodes_line_of_records_to_file() {
    use common::fhir_receiver::{Receiver, Turn};
    use server::outbox::{Policy, Sender, Worker};
    use std::sync::Arc;
    use std::time::Duration;

    let dash = Dash::new();
    let maya = dash.sign_in("maya").await;
    let all = dash.db(|conn| caseload::open_actions(conn, &["north".parse().expect("a team")]).expect("actions"));
    let episode = all.iter().find(|a| a.code == "file_to_epr").expect("a record to file").episode;
    // Filing on, then a change from the office owes the episode's records.
    dash.db(|conn| server::epr::set_filing(conn, true).expect("filing on"));
    let now = dash.state.clock.now();
    let who = server::audit::Who {
        user_id: "user-maya".into(),
        username: "maya".into(),
        device: "desk-maya".into(),
        via: server::audit::Via::Api,
    };
    let docs = Arc::clone(&dash.state.docs);
    let alerts = Arc::clone(&dash.state.alerts);
    dash.db(|conn| {
        let teams: [server::accounts::TeamId; 1] = ["north".parse().expect("a team")];
        let mut desk = server::office::Desk::new(conn, &docs, &who, &teams, now, &alerts);
        server::office::set_plan(&mut desk, episode, "Call on Friday.").expect("the plan");
    });
    let owed = dash.number(&format!("SELECT COUNT(*) FROM outbox WHERE episode = '{episode}'"));
    assert!(owed > 0);

    let receiver = Receiver::start("token", &[Turn::Fail; 8], Duration::from_secs(1)).await;
    let filing = server::epr::Filing::new(&receiver.url, Some(server::Secret::from("token".to_owned())), &dash.state)
        .expect("a filing");
    let policy = Policy { max_attempts: 2, claim: 1000, ..Policy::default() };
    let worker = Arc::new(Worker::new(
        dash.state.db.clone(),
        dash.state.clock.clone(),
        vec![Arc::new(filing) as Arc<dyn Sender>],
        policy,
    ));
    let pass = || {
        let worker = Arc::clone(&worker);
        async move { tokio::task::spawn_blocking(move || worker.pass()).await.expect("no panic").expect("a pass") }
    };
    let line = |page: &str| -> String {
        let grouped = section(page, "filing");
        let at = grouped.find(&format!("data-episode=\"{episode}\"")).expect("the episode's line");
        grouped[at..].split("</tr>").next().unwrap_or_default().to_owned()
    };

    assert!(pass().await.failed > 0);
    let page = dash.get("/dashboard", &maya).await;
    let shown = line(&page.body);
    assert!(shown.contains("filing failed: the EPR answered HTTP 500"), "{shown}");
    assert!(shown.contains(&format!("{owed} retrying, 0 failed")), "{shown}");

    dash.advance(3600);
    assert!(pass().await.failed > 0);
    let page = dash.get("/dashboard", &maya).await;
    let shown = line(&page.body);
    assert!(shown.contains(&format!("0 retrying, {owed} failed")), "{shown}");
    // The patient's reference is on its own cell, never in the reason.
    let patient = all.iter().find(|a| a.episode == episode).expect("the episode").patient_ref.clone();
    let reason = between(&shown, "filing failed: ", "<").expect("a reason");
    assert!(!reason.contains(&patient), "{reason}");
}

common::backends!(
    filing_failures_show_on_the_episodes_line_of_records_to_file,
    the_caseload_leads_with_clinical_actions_and_groups_the_records_to_file_per_episode,
    the_episode_page_shows_facts_conflicts_actions_and_the_merged_timeline,
    the_sign_in_form_refuses_a_wrong_password_and_sends_the_signed_out_to_it,
    a_sign_in_form_without_its_own_token_is_refused_before_the_password_is_checked,
    a_sign_in_token_only_the_server_could_make_is_accepted,
    failed_dashboard_sign_ins_lock_the_username_out_from_that_client,
    the_session_cookie_is_http_only_strict_and_kept_only_hashed,
    the_caseload_shows_overdue_actions_first_then_by_owner_and_the_rates,
    a_record_with_a_skewed_clock_carries_a_note_in_the_timeline,
    another_teams_episode_answers_as_one_that_does_not_exist,
    a_form_without_the_sessions_csrf_token_is_refused_and_changes_nothing,
    resolving_a_conflict_through_the_form_sets_the_fact_and_says_who,
    filing_a_record_through_the_form_records_filed_to_epr,
    every_dashboard_read_and_write_is_in_the_audit_log,
    signing_out_ends_the_session,
    a_session_ends_when_it_expires_or_its_user_is_disabled,
    with_passwords_off_only_the_providers_are_offered_and_every_password_sign_in_is_refused,
    each_open_action_names_the_people_who_answer_for_it_beside_its_role,
    the_caseload_filters_by_overdue_urgent_owner_and_pathway_through_a_get_form,
    managers_read_the_teams_audit_log_a_page_at_a_time_and_no_one_else_does,
);
