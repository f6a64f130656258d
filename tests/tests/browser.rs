//! The dashboard in a real browser: headless Chromium, driven through ChromeDriver with
//! fantoccini, against the real server on loopback with the demo's teams, users and
//! episodes. A manager signs in, opens the caseload, sees an overdue action, opens an
//! episode, reads its timeline and resolves a conflict through the form; each read and
//! write is then found in the audit log. Screenshots of both pages are kept under
//! `target/screenshots/`.
//!
//! Without `chromedriver` the test is skipped with a message, except under CI (the `CI`
//! variable set), where it fails: `.ci/run` installs Chromium and ChromeDriver.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tests::Server;

/// Debian's paths; otherwise the program is looked for on `PATH`.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium's flags. Without the background-networking ones, Chromium keeps trying to
/// reach services that a closed network refuses.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1024,1366",
];

/// How long any one page may take to appear.
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

fn program(default: &str, name: &str) -> Option<PathBuf> {
    let default = PathBuf::from(default);
    if default.is_file() {
        return Some(default);
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
}

/// ChromeDriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(path: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address").port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(started.elapsed() < PAGE_TIMEOUT, "chromedriver did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, url: format!("http://{addr}") }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/screenshots/`, beside the integration tests' own `target/tmp`.
fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target directory").join("screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshot directory");
    dir
}

#[test]
fn a_manager_signs_in_reads_an_episode_and_resolves_a_conflict_in_a_real_browser() {
    let Some(chromedriver) = program(CHROMEDRIVER, "chromedriver") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromedriver not found: the browser test needs Debian's chromium and chromium-driver, \
             which .ci/run installs"
        );
        println!("skipped: chromedriver not found (CI would fail)");
        return;
    };
    let chromium = program(CHROMIUM, "chromium").expect("chromedriver is here but chromium is not");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("tether.db");
    let passwords = tests::seed_demo(&db);
    let server = Server::start(&db);
    let driver = Driver::start(&chromedriver);
    let profile = tempfile::tempdir().expect("a browser profile directory");

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let episode = runtime.block_on(async {
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), json!({"binary": chromium, "args": args}));
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .expect("a browser session");
        let outcome = browse(&client, &server.url(), &passwords["maya"]).await;
        let _ = client.close().await;
        outcome
    });

    // Every read and write the browser made is in the audit log, marked as the dashboard's.
    let token = api_token(&server, &passwords["maya"]);
    let mut response = ureq::get(format!("{}/v1/audit?episode={episode}", server.url()))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .expect("the audit log");
    let audit: Value = response.body_mut().read_json().expect("JSON");
    let entries: Vec<&Value> =
        audit["entries"].as_array().expect("entries").iter().filter(|e| e["via"] == "dashboard").collect();
    let actions: Vec<&str> = entries.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["list_episode", "read_episode", "set_fact", "read_episode"], "{audit}");
    for entry in &entries {
        assert_eq!(entry["username"], "maya");
        assert!(entry["device"].as_str().is_some_and(|d| d.starts_with("dashboard:")), "{entry}");
    }
}

/// Everything the browser does; returns the episode's id.
async fn browse(client: &Client, base: &str, password: &str) -> String {
    client.set_window_size(1024, 1366).await.expect("a tablet-sized window");
    client.goto(&format!("{base}/dashboard")).await.expect("open the dashboard");
    let wait = || client.wait().at_most(PAGE_TIMEOUT);

    // Signed out: the sign-in form.
    wait().for_element(Locator::Css("input[name=username]")).await.expect("the sign-in form");
    assert_eq!(client.current_url().await.expect("a URL").path(), "/dashboard/login");
    client.find(Locator::Css("input[name=username]")).await.expect("username").send_keys("maya").await.expect("type");
    client.find(Locator::Css("input[name=password]")).await.expect("password").send_keys(password).await.expect("type");
    client
        .find(Locator::Css("form[action='/dashboard/login'] button"))
        .await
        .expect("button")
        .click()
        .await
        .expect("sign in");

    // The caseload, overdue actions first.
    wait().for_element(Locator::Css("section#actions")).await.expect("the caseload");
    assert_eq!(client.current_url().await.expect("a URL").path(), "/dashboard");
    let rows = client.find_all(Locator::Css("section#actions tbody tr")).await.expect("action rows");
    assert!(!rows.is_empty());
    assert_eq!(rows[0].attr("data-state").await.expect("an attribute").as_deref(), Some("overdue"));
    let first = rows[0].text().await.expect("text");
    assert!(first.contains("Overdue"), "{first}");
    let rates = client.find(Locator::Css("section#rates")).await.expect("rates").text().await.expect("text");
    assert!(rates.contains("reference: 1 in 10 (10%)"), "{rates}");
    let png = client.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots().join("dashboard.png"), png).expect("save the screenshot");

    // The episode with a conflict.
    client
        .find(Locator::Css("section#episodes"))
        .await
        .expect("the episode list")
        .find(Locator::LinkText("DEMO-1003"))
        .await
        .expect("DEMO-1003's link")
        .click()
        .await
        .expect("open the episode");
    wait().for_element(Locator::Css("section#timeline")).await.expect("the episode page");
    let url = client.current_url().await.expect("a URL");
    let episode = url.path().strip_prefix("/dashboard/episodes/").expect("an episode page").to_owned();
    let heading = client.find(Locator::Css("h1")).await.expect("a heading").text().await.expect("text");
    assert_eq!(heading, "Episode DEMO-1003");
    let records = client.find_all(Locator::Css("ol.timeline > li")).await.expect("records");
    assert!(records.len() >= 6, "the merged timeline: {} records", records.len());
    let timeline = client.find(Locator::Css("section#timeline")).await.expect("timeline").text().await.expect("text");
    for text in ["Appointment missed", "Fact changed", "phone-ana", "phone-ben", "Received"] {
        assert!(timeline.contains(text), "{text} in the timeline");
    }

    // Resolve the risk conflict: keep "high".
    client
        .find(Locator::Css("section#conflicts div[data-field=risk] button[value='\"high\"']"))
        .await
        .expect("the button that keeps high")
        .click()
        .await
        .expect("resolve");
    wait()
        .for_element(Locator::XPath("//section[@id='conflicts']/p[normalize-space()='No conflicts.']"))
        .await
        .expect("the conflict is gone");
    assert_eq!(client.current_url().await.expect("a URL").path(), format!("/dashboard/episodes/{episode}"));
    assert!(client.find_all(Locator::Css("section#conflicts form")).await.expect("forms").is_empty());
    let timeline = client.find(Locator::Css("section#timeline")).await.expect("timeline").text().await.expect("text");
    // By maya, on the server's own device (the audit log names her dashboard session).
    assert!(timeline.contains("maya on server:"), "the change is in the timeline: {timeline}");
    let png = client.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots().join("episode.png"), png).expect("save the screenshot");
    episode
}

/// An access token for maya, for the audit API.
fn api_token(server: &Server, password: &str) -> String {
    let mut response = ureq::post(format!("{}/v1/auth/login", server.url()))
        .send_json(json!({"username": "maya", "password": password, "device_id": "browser-test-audit"}))
        .expect("sign in to the API");
    let body: Value = response.body_mut().read_json().expect("JSON");
    body["access_token"].as_str().expect("an access token").to_owned()
}

/// The dashboard's sign-in with the trust's identity provider in headless Chromium: the
/// sign-in page offers only the provider (passwords are off), the browser goes to the
/// provider and back, the page after the callback moves on to the caseload by itself (its
/// session cookie is `SameSite=Strict`, so this is the step a redirect would break), and
/// the sign-in is in the audit log with the provider and the subject.
mod needs_oidc_provider {
    use fantoccini::{ClientBuilder, Locator};
    use serde_json::json;
    use tests::Server;
    use tests::oidc::{self, Configured, Provider};

    use super::{CHROMEDRIVER, CHROMIUM, CHROMIUM_ARGS, Driver, PAGE_TIMEOUT, program, screenshots};

    #[test]
    fn a_manager_signs_in_with_the_trusts_identity_provider_in_a_real_browser() {
        let chromedriver = program(CHROMEDRIVER, "chromedriver").expect(
            "chromedriver not found: this test needs Debian's chromium and chromium-driver (.ci/run installs them)",
        );
        let chromium = program(CHROMIUM, "chromium").expect("chromium not found: install Debian's chromium");
        let provider = Provider::start();
        provider.person(json!({
            "sub": "910000000042", "email": "maya.cis2@nhs.net", "acr": "AAL3_ANY", "roles_at": "userinfo",
            "nhsid_nrbac_roles": [{"person_orgid": "1", "person_roleid": "7", "org_code": "RX4",
                                   "role_name": "\"Admin\"", "role_code": "S8000:G8001:R8000"}],
        }));
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = dir.path().join("tether.db");
        tests::seed_demo(&db);
        let addr = tests::free_addr();
        let extra = format!(
            "{}userinfo = true\nacr_levels = [\"AAL2_OR_AAL3_ANY\", \"AAL3_ANY\"]\nmin_acr = \"AAL3_ANY\"\n",
            oidc::private_key_jwt()
        );
        let mapping =
            "[[rule]]\ncis2_role = \"R8000\"\norg_code = \"RX4\"\nteams = [\"north\"]\nrole = \"team_manager\"\n";
        let settings = oidc::settings(
            dir.path(),
            addr,
            false,
            &[Configured { id: "cis2", name: "NHS CIS2", provider: &provider, extra: &extra }],
            mapping,
        );
        let server = Server::start_at(&db, addr, Some(&settings), &[]);
        let driver = Driver::start(&chromedriver);
        let profile = tempfile::tempdir().expect("a browser profile directory");

        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
        runtime.block_on(async {
            let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
            args.push(format!("--user-data-dir={}", profile.path().display()));
            let mut capabilities = serde_json::Map::new();
            capabilities.insert("browserName".into(), json!("chrome"));
            capabilities.insert("goog:chromeOptions".into(), json!({"binary": chromium, "args": args}));
            let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities)
                .connect(&driver.url)
                .await
                .expect("a browser session");
            let outcome = async {
                let wait = || client.wait().at_most(PAGE_TIMEOUT);
                client.goto(&format!("{}/dashboard", server.url())).await.expect("open the dashboard");
                let button =
                    wait().for_element(Locator::Css("a[data-provider=cis2]")).await.expect("the provider's button");
                assert_eq!(button.text().await.expect("text"), "Sign in with NHS CIS2");
                assert!(client.find_all(Locator::Css("input[type=password]")).await.expect("inputs").is_empty());
                let png = client.screenshot().await.expect("a screenshot");
                std::fs::write(screenshots().join("sign-in-providers.png"), png).expect("save the screenshot");
                button.click().await.expect("sign in with the provider");
                // To the provider, back to the callback, and on to the caseload by itself.
                wait().for_element(Locator::Css("section#actions")).await.expect("the caseload");
                assert_eq!(client.current_url().await.expect("a URL").path(), "/dashboard");
                let who = client.find(Locator::Css("header .who")).await.expect("who").text().await.expect("text");
                assert_eq!(who, "Signed in as cis2:maya.cis2@nhs.net (team manager, north)");
                let rows = client.find_all(Locator::Css("section#actions tbody tr")).await.expect("rows");
                assert!(!rows.is_empty(), "north's open actions");
                let png = client.screenshot().await.expect("a screenshot");
                std::fs::write(screenshots().join("signed-in-with-cis2.png"), png).expect("save the screenshot");
            }
            .await;
            let _ = client.close().await;
            outcome
        });

        let conn = server::db::open(&db).expect("open the database");
        let (username, device, detail): (String, String, String) = conn
            .query_row("SELECT username, device, detail FROM audit WHERE action = 'oidc_sign_in'", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .expect("the sign-in's audit entry");
        assert_eq!(username, "cis2:maya.cis2@nhs.net");
        assert!(device.starts_with("dashboard:"), "{device}");
        assert_eq!(detail, "provider=cis2 subject=910000000042");
    }
}
