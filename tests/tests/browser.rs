//! The dashboard in a real browser: headless Chromium, driven through ChromeDriver with
//! fantoccini, against the real server on loopback with the demo's teams, users and
//! episodes. A manager signs in and, at 390, 800 and 1280 px, reads the caseload, filters
//! it, opens an episode and the team's audit log, each page measured for horizontal
//! overflow; resolves a conflict on the phone and sees the confirmation; each read and
//! write is then found in the audit log. Screenshots of every page at every width are
//! kept under `target/screenshots/` (the test prints the path).
//!
//! The tests live in `needs_chromium` modules: without Chromium and ChromeDriver they fail,
//! saying what to install, and `scripts/test` skips them (counting them as skipped) when
//! either program is missing, except under CI, where a missing one fails the run.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
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

/// Chromium and ChromeDriver, or a failure that says how to install them.
fn browser() -> (PathBuf, PathBuf) {
    const INSTALL: &str = "install Debian's chromium and chromium-driver: \
                           `apt-get install -y chromium chromium-driver` (.ci/run does)";
    let chromedriver =
        program(CHROMEDRIVER, "chromedriver").unwrap_or_else(|| panic!("chromedriver not found: {INSTALL}"));
    let chromium = program(CHROMIUM, "chromium").unwrap_or_else(|| panic!("chromium not found: {INSTALL}"));
    (chromedriver, chromium)
}

/// A browser session on ChromeDriver with Chromium's flags and its own profile.
async fn session(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert("goog:chromeOptions".into(), json!({"binary": chromium, "args": args}));
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

/// The dashboard in headless Chromium: a manager signs in, and at each width a phone
/// (390 px), a tablet (800 px) and a desk (1280 px) give, reads the caseload, filters it,
/// opens an episode and the audit log, with nothing wider than the window; resolves a
/// conflict on the phone and lands on a page saying what was done. Every read and write
/// is then found in the audit log.
mod needs_chromium {
    use fantoccini::{Client, Locator};
    use serde_json::Value;
    use tests::Server;

    use super::{Driver, PAGE_TIMEOUT, api_token, browser, screenshots, session};

    /// The widths every page is checked at: a phone, a tablet, a desk.
    const WIDTHS: [u32; 3] = [390, 800, 1280];

    #[test]
    fn a_manager_reads_filters_and_changes_the_caseload_at_every_width_in_a_real_browser() {
        let (chromedriver, chromium) = browser();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = dir.path().join("tether.db");
        let passwords = tests::seed_demo(&db);
        let server = Server::start(&db);
        let driver = Driver::start(&chromedriver);
        let profile = tempfile::tempdir().expect("a browser profile directory");

        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
        let episode = runtime.block_on(async {
            let client = session(&driver, &chromium, profile.path()).await;
            let outcome = browse(&client, &server.url(), &passwords["maya"]).await;
            let _ = client.close().await;
            outcome
        });

        // Every read and write the browser made is in the audit log, as the dashboard's.
        let token = api_token(&server, &passwords["maya"]);
        let mut response = ureq::get(format!("{}/v1/audit?episode={episode}&limit=1000", server.url()))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .expect("the audit log");
        let audit: Value = response.body_mut().read_json().expect("JSON");
        let entries: Vec<&Value> =
            audit["entries"].as_array().expect("entries").iter().filter(|e| e["via"] == "dashboard").collect();
        let count = |action: &str| entries.iter().filter(|e| e["action"] == action).count();
        // The caseload after signing in, at three widths, filtered and cleared (a list
        // notes every episode it read, shown or filtered out); the episode at three
        // widths, before its change and after; the episode's own audit log once (the
        // team-wide log's reads name no episode).
        assert_eq!(count("list_episode"), 6, "{audit}");
        assert_eq!(count("read_episode"), 5, "{audit}");
        assert_eq!(count("set_fact"), 1, "{audit}");
        assert_eq!(count("read_audit"), 1, "{audit}");
        for entry in &entries {
            assert_eq!(entry["username"], "maya");
            assert!(entry["device"].as_str().is_some_and(|d| d.starts_with("dashboard:")), "{entry}");
        }
        println!("screenshots of every page at 390, 800 and 1280 px: {}", screenshots().display());
    }

    /// What one page measures: the document's width against the window's, and every table
    /// against the window and the box it sits in.
    async fn fits(client: &Client, page: &str, width: u32) {
        let measured = client
            .execute(
                r#"
                const root = document.documentElement;
                const tables = [...document.querySelectorAll('table')].map((t) => {
                    const box = t.getBoundingClientRect();
                    const parent = t.parentElement.getBoundingClientRect();
                    return { right: box.right, width: box.width, parentRight: parent.right, parentWidth: parent.width,
                             scroll: t.scrollWidth, stacked: getComputedStyle(t.querySelector('thead')).display === 'none' };
                });
                const wide = [...document.querySelectorAll('body *')]
                    .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5)
                    .slice(0, 5).map((e) => e.tagName + '.' + e.className + ': ' + e.textContent.slice(0, 40));
                return { scrollWidth: root.scrollWidth, innerWidth: window.innerWidth, tables, wide };
                "#,
                vec![],
            )
            .await
            .expect("measure the page");
        let inner = measured["innerWidth"].as_f64().expect("innerWidth");
        assert_eq!(inner, f64::from(width), "{page}: the window is {inner} px wide, not {width}");
        let scroll = measured["scrollWidth"].as_f64().expect("scrollWidth");
        assert!(scroll <= inner, "{page} at {width} px: the page is {scroll} px wide: {measured}");
        let tables = measured["tables"].as_array().expect("tables");
        assert!(!tables.is_empty(), "{page}: a table to measure");
        for table in tables {
            let number = |key: &str| table[key].as_f64().expect("a number");
            assert!(number("right") <= inner + 0.5, "{page} at {width} px: a table past the window: {table}");
            assert!(
                number("width") <= number("parentWidth") + 0.5,
                "{page} at {width} px: a table wider than its box: {table}"
            );
            assert!(number("scroll") <= number("width") + 0.5, "{page} at {width} px: a table cut off: {table}");
            // On a phone every row is a card; wider, a table.
            assert_eq!(table["stacked"].as_bool(), Some(width < 700), "{page} at {width} px: {table}");
        }
    }

    async fn screenshot(client: &Client, name: &str) {
        let png = client.screenshot().await.expect("a screenshot");
        std::fs::write(screenshots().join(format!("{name}.png")), png).expect("save the screenshot");
    }

    /// Everything the browser does; returns the id of the episode it changed.
    async fn browse(client: &Client, base: &str, password: &str) -> String {
        client.set_window_size(1280, 1000).await.expect("a desk-sized window");
        client.goto(&format!("{base}/dashboard")).await.expect("open the dashboard");
        let wait = || client.wait().at_most(PAGE_TIMEOUT);

        // Signed out: the sign-in form.
        wait().for_element(Locator::Css("input[name=username]")).await.expect("the sign-in form");
        assert_eq!(client.current_url().await.expect("a URL").path(), "/dashboard/login");
        client
            .find(Locator::Css("input[name=username]"))
            .await
            .expect("username")
            .send_keys("maya")
            .await
            .expect("type");
        client
            .find(Locator::Css("input[name=password]"))
            .await
            .expect("password")
            .send_keys(password)
            .await
            .expect("type");
        client
            .find(Locator::Css("form[action='/dashboard/login'] button"))
            .await
            .expect("button")
            .click()
            .await
            .expect("sign in");
        wait().for_element(Locator::Css("section#actions")).await.expect("the caseload");

        let mut episode = String::new();
        for width in WIDTHS {
            // The viewport is the window in headless Chromium; a tall one shows more.
            client.set_window_size(width, 1400).await.expect("resize");

            // The caseload, overdue actions first, each owner named.
            client.goto(&format!("{base}/dashboard")).await.expect("the caseload");
            wait().for_element(Locator::Css("section#actions")).await.expect("the caseload");
            let rows = client.find_all(Locator::Css("section#actions tbody tr")).await.expect("action rows");
            assert!(!rows.is_empty());
            assert_eq!(rows[0].attr("data-state").await.expect("an attribute").as_deref(), Some("overdue"));
            let first = rows[0].text().await.expect("text");
            assert!(first.contains("Overdue"), "{first}");
            let owner = rows[0].find(Locator::Css("td.owner strong")).await.expect("a named owner");
            assert!(!owner.text().await.expect("text").is_empty());
            let rates = client.find(Locator::Css("section#rates")).await.expect("rates").text().await.expect("text");
            assert!(rates.contains("reference: 1 in 10 (10%)"), "{rates}");
            fits(client, "the caseload", width).await;
            screenshot(client, &format!("caseload-{width}")).await;

            if width == 800 {
                // The filters are a plain form: tick "Overdue only", choose an owner, send.
                client.find(Locator::Css("input[name=overdue]")).await.expect("the box").click().await.expect("tick");
                client
                    .find(Locator::Css("select[name=owner] option[value=maya]"))
                    .await
                    .expect("maya in the owner list")
                    .click()
                    .await
                    .expect("choose");
                client
                    .find(Locator::Css("form#filters button"))
                    .await
                    .expect("the button")
                    .click()
                    .await
                    .expect("filter");
                wait().for_element(Locator::Css("input[name=overdue][checked]")).await.expect("the filtered caseload");
                let query = client.current_url().await.expect("a URL").query().unwrap_or_default().to_owned();
                assert_eq!(query, "overdue=1&owner=maya&pathway=", "the form's GET");
                let rows = client.find_all(Locator::Css("section#actions tbody tr")).await.expect("rows");
                for row in &rows {
                    assert_eq!(row.attr("data-state").await.expect("an attribute").as_deref(), Some("overdue"));
                    let owner =
                        row.find(Locator::Css("td.owner strong")).await.expect("owner").text().await.expect("text");
                    assert!(owner.split(", ").any(|p| p == "maya"), "{owner}");
                }
                fits(client, "the filtered caseload", width).await;
                screenshot(client, "caseload-filtered-800").await;
                client
                    .find(Locator::LinkText("Clear the filters"))
                    .await
                    .expect("the way back")
                    .click()
                    .await
                    .expect("clear");
                wait()
                    .for_element(Locator::Css("input[name=overdue]:not([checked])"))
                    .await
                    .expect("the whole caseload");
            }

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
            let page = client.current_url().await.expect("a URL");
            episode = page.path().strip_prefix("/dashboard/episodes/").expect("an episode page").to_owned();
            let heading = client.find(Locator::Css("h1")).await.expect("a heading").text().await.expect("text");
            assert_eq!(heading, "Episode DEMO-1003");
            let records = client.find_all(Locator::Css("ol.timeline > li")).await.expect("records");
            assert!(records.len() >= 6, "the merged timeline: {} records", records.len());
            let timeline =
                client.find(Locator::Css("section#timeline")).await.expect("timeline").text().await.expect("text");
            for text in ["Appointment missed", "Fact changed", "phone-ana", "phone-ben", "Received"] {
                assert!(timeline.contains(text), "{text} in the timeline");
            }
            fits(client, "the episode", width).await;
            screenshot(client, &format!("episode-{width}")).await;

            // The team's audit log.
            client.goto(&format!("{base}/dashboard/audit")).await.expect("the audit log");
            wait().for_element(Locator::Css("section#audit")).await.expect("the audit page");
            fits(client, "the audit log", width).await;
            screenshot(client, &format!("audit-{width}")).await;
        }

        // On the phone: resolve the risk conflict (keep "high"), and land on a page that
        // says so.
        client.set_window_size(390, 1400).await.expect("a phone-sized window");
        client.goto(&format!("{base}/dashboard/episodes/{episode}")).await.expect("the episode");
        client
            .find(Locator::Css("section#conflicts div[data-field=risk] button[value='\"high\"']"))
            .await
            .expect("the button that keeps high")
            .click()
            .await
            .expect("resolve");
        let done = wait().for_element(Locator::Css("div#done")).await.expect("the confirmation");
        let said = done.text().await.expect("text");
        assert!(said.starts_with("Saved. Risk is now high."), "{said}");
        assert!(said.contains("Recorded by maya"), "{said}");
        let landed = client.current_url().await.expect("a URL");
        assert_eq!(landed.path(), format!("/dashboard/episodes/{episode}"));
        assert!(landed.query().is_some_and(|q| q.starts_with("done=")), "{landed}");
        let conflicts =
            client.find(Locator::Css("section#conflicts")).await.expect("conflicts").text().await.expect("text");
        assert!(conflicts.contains("No conflicts."), "{conflicts}");
        let timeline =
            client.find(Locator::Css("section#timeline")).await.expect("timeline").text().await.expect("text");
        // By maya, on the server's own device (the audit log names her dashboard session).
        assert!(timeline.contains("maya on server:"), "the change is in the timeline: {timeline}");
        fits(client, "the confirmation", 390).await;
        screenshot(client, "confirmation-390").await;

        // The episode's own audit log, from its page.
        client.find(Locator::LinkText("its audit log")).await.expect("the link").click().await.expect("open");
        wait().for_element(Locator::Css("section#audit tbody tr")).await.expect("the episode's log");
        let first = client.find(Locator::Css("section#audit tbody tr")).await.expect("the newest entry");
        assert_eq!(first.attr("data-action").await.expect("an attribute").as_deref(), Some("read_episode"));
        episode
    }
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
mod needs_chromium_and_oidc_provider {
    use fantoccini::{ClientBuilder, Locator};
    use serde_json::json;
    use tests::Server;
    use tests::oidc::{self, Configured, Provider};

    use super::{CHROMIUM_ARGS, Driver, PAGE_TIMEOUT, browser, screenshots};

    #[test]
    fn a_manager_signs_in_with_the_trusts_identity_provider_in_a_real_browser() {
        let (chromedriver, chromium) = browser();
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
