//! The test OpenID provider: `tests/oidc-provider/provider.mjs` (oauth2-mock-server 8
//! with real client authentication, claims, key rotation and hostile tokens on request)
//! in a child process on loopback, and what the tests do with it: settings for Tether
//! naming it, a browser's walk through the dashboard's sign-in (cookies kept, redirects
//! taken one at a time), and the phone's walk through the system browser.
//!
//! It needs Node.js 20.19+ and `npm ci --prefix tests/oidc-provider`. Tests that use it
//! live in modules named `needs_oidc_provider`; without it they fail, naming what to
//! install (they never pass without having run).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::Server;

/// The phones' redirect URI in the settings the tests write (a private-use scheme, as an
/// app registers one).
pub const PHONE_REDIRECT: &str = "uk.nhs.example.tether:/oidc";
/// The client id Tether has at the test provider.
pub const CLIENT_ID: &str = "tether";

/// What to install when the provider cannot run.
const INSTALL: &str = "needs an OpenID provider on loopback: install Node.js 20.19 or newer and run \
                       `npm ci --prefix tests/oidc-provider` (.ci/run does)";

fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc-provider")
}

/// Tether's private key for `private_key_jwt` in the tests (a key made for tests only).
pub fn client_key() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/src/oidc/testdata/client-key.pem")
}

/// Another RSA key: a client that holds it is not the client the provider knows.
pub fn other_key() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/src/oidc/testdata/other-key.pem")
}

/// `node`, and the provider's script with its modules installed; or a panic naming what
/// to install.
fn peer() -> (PathBuf, PathBuf) {
    let node = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("node"))
        .find(|path| path.is_file());
    let Some(node) = node else { panic!("node not found: this test {INSTALL}") };
    let dir = provider_dir();
    assert!(
        dir.join("node_modules/oauth2-mock-server/package.json").is_file(),
        "oauth2-mock-server is not installed in {}: this test {INSTALL}",
        dir.display()
    );
    (node, dir.join("provider.mjs"))
}

/// The provider, in a child process, killed when dropped.
#[derive(Debug)]
pub struct Provider {
    child: Child,
    /// Its issuer URL (`http://127.0.0.1:PORT`).
    pub issuer: String,
}

impl Provider {
    /// A provider that authenticates Tether by `private_key_jwt` with [`client_key`].
    pub fn start() -> Self {
        Self::start_with(&["--client-key", &client_key().to_string_lossy()])
    }

    /// A provider started with these arguments (`--client-key PEM`, `--client-secret S`).
    pub fn start_with(args: &[&str]) -> Self {
        let (node, script) = peer();
        let mut child = Command::new(node)
            .arg(script)
            .args(["--port", "0", "--client-id", CLIENT_ID])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the provider ({e}): this test {INSTALL}"));
        let stdout = child.stdout.take().expect("the provider's stdout");
        let mut lines = BufReader::new(stdout).lines();
        let issuer = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                let rest = line.strip_prefix("oidc provider: listening on ")?;
                Some(rest.split_whitespace().next()?.to_owned())
            })
            .unwrap_or_else(|| panic!("the provider did not start: this test {INSTALL}"));
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, issuer }
    }

    fn control(&self, path: &str, body: Value) -> Value {
        let mut response = crate::agent()
            .post(format!("{}/_control/{path}", self.issuer))
            .send_json(body)
            .expect("the provider answers");
        assert_eq!(response.status().as_u16(), 200, "the provider's /_control/{path}");
        response.body_mut().read_json().expect("JSON")
    }

    /// The person who signs in from now on: their claims (`sub` required), with the role
    /// claims (`nhsid_nrbac_roles`, `roles`, `groups`) in the ID token, or at userinfo
    /// with `"roles_at": "userinfo"`.
    pub fn person(&self, claims: Value) {
        self.control("person", claims);
    }

    /// Changes the next ID token: `{"expired": true}`, `{"aud": …}`, `{"iss": …}`,
    /// `{"nonce": …}`, `{"acr": …}`, `{"sign_with": "retired" | "unserved" | "none" |
    /// "same-kid-other-key"}`.
    pub fn next(&self, change: Value) {
        self.control("next", change);
    }

    /// Rotates the signing key: a new one signs and is published, the old one is
    /// withdrawn. Returns `{"retired_kid", "kid"}`.
    pub fn rotate(&self) -> Value {
        self.control("rotate", json!({}))
    }

    /// Every token request so far: `{"grant_type", "method", "ok", "reason", "scope",
    /// "acr_values"}`.
    pub fn log(&self) -> Vec<Value> {
        let mut response = crate::agent().get(format!("{}/_control/log", self.issuer)).call().expect("the log");
        response.body_mut().read_json().expect("JSON")
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One provider in Tether's settings.
#[derive(Debug)]
pub struct Configured<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub provider: &'a Provider,
    /// More settings, as TOML lines (client authentication, `userinfo`, `min_acr`, …).
    pub extra: &'a str,
}

/// Writes Tether's sign-in settings for a server at `tether` and the claims `mapping`
/// into `dir`; returns the settings file.
pub fn settings(
    dir: &Path,
    tether: SocketAddr,
    passwords: bool,
    providers: &[Configured<'_>],
    mapping: &str,
) -> PathBuf {
    std::fs::write(dir.join("mapping.toml"), mapping).expect("write the mapping");
    let mut text = format!("passwords = {passwords}\nmapping = \"mapping.toml\"\n");
    for p in providers {
        text.push_str(&format!(
            "\n[[provider]]\nid = \"{}\"\nname = \"{}\"\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
             redirect_uri = \"http://{tether}/dashboard/oidc/callback\"\nphone_redirect_uris = [\"{PHONE_REDIRECT}\"]\n{}\n",
            p.id, p.name, p.provider.issuer, p.extra
        ));
    }
    let path = dir.join("oidc.toml");
    std::fs::write(&path, text).expect("write the settings");
    path
}

/// The `private_key_jwt` lines of a provider's settings, with [`client_key`].
pub fn private_key_jwt() -> String {
    format!(
        "private_key_file = \"{}\"\nprivate_key_id = \"tether-test\"\nprivate_key_alg = \"RS512\"\n",
        client_key().display()
    )
}

/// A browser that keeps cookies and takes one redirect at a time.
#[derive(Debug, Default)]
pub struct Browser {
    cookies: BTreeMap<String, String>,
}

/// An answer: status, `Location`, body.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Browser {
    /// `GET url`, sending and keeping cookies, not following a redirect.
    pub fn get(&mut self, url: &str) -> Page {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into();
        let mut request = agent.get(url);
        if !self.cookies.is_empty() {
            let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
            request = request.header("Cookie", cookie);
        }
        let mut response = request.call().expect("an answer");
        for value in response.headers().get_all("set-cookie") {
            let Some((pair, _)) = value.to_str().ok().map(|v| v.split_once(';').unwrap_or((v, ""))) else { continue };
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() {
                    self.cookies.remove(name.trim());
                } else {
                    self.cookies.insert(name.trim().to_owned(), value.to_owned());
                }
            }
        }
        let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Page { status, location, body }
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    /// Signs in to the dashboard of `server` with provider `id`: start, the provider's
    /// authorization endpoint, and the callback. Returns the callback's page.
    pub fn sign_in(&mut self, server: &Server, id: &str) -> Page {
        let start = self.get(&format!("{}/dashboard/oidc/{id}/start", server.url()));
        let Some(to_provider) = start.location else { return start };
        let at_provider = self.get(&to_provider);
        let callback = at_provider.location.expect("the provider redirects back");
        assert!(callback.starts_with(&server.url()), "back to Tether: {callback}");
        self.get(&callback)
    }
}

/// What the system browser does for a phone: follows the authorization URL to the
/// provider, which redirects at once to the app's redirect URI; returns that redirect.
pub fn phone_browser(authorization_url: &str) -> String {
    let page = Browser::default().get(authorization_url);
    page.location.unwrap_or_else(|| panic!("the provider did not redirect: {} {}", page.status, page.body))
}
