//! Signing in with the trust's identity provider, end to end: a real `tether serve` in a
//! child process with `--oidc-config`, and a real OpenID provider on loopback
//! (`tests/oidc-provider`, oauth2-mock-server with client authentication checked for
//! real). The dashboard's sign-in (cookies and redirects taken as a browser takes them),
//! the phone's (the core and the system browser), the person's placement from CIS2 roles
//! and Entra app roles and groups, the audit log, and every refusal: another nonce, an
//! expired ID token or one for another audience or issuer, a rotated key (the retired
//! key refused, the new one accepted), a key never published, an unsigned token, too low
//! an assurance, no mapped role, and a client the provider does not know.
//!
//! Hostile ID tokens are made by the provider itself on request (its token endpoint
//! answers with them), so each goes through Tether's whole path: the exchange, the key
//! cache, the checks.

mod needs_oidc_provider {
    use client_core::http::Http;
    use client_core::{Core, StoreKey};
    use jiff::Timestamp;
    use serde_json::{Value, json};
    use tests::oidc::{self, Browser, Configured, Provider};
    use tests::{Server, call_json};

    /// Teams north and south (and east, which the mapping names but which does not exist).
    const MAPPING: &str = r#"
[[rule]]
provider = "cis2"
cis2_role = "R8000"
org_code = "RX4"
teams = ["north"]
role = "team_manager"

[[rule]]
provider = "cis2"
cis2_role = "R8001"
org_code = "RX4"
teams = ["north"]
role = "practitioner"

[[rule]]
provider = "cis2"
cis2_role = "R9999"
teams = ["east"]
role = "practitioner"

[[rule]]
provider = "entra"
app_role = "Tether.Manager"
teams = ["south"]
role = "team_manager"

[[rule]]
provider = "entra"
group = "0b6c2f1a-7d0e-4c55-9a8e-3f1d2c4b5a69"
teams = ["south"]
role = "practitioner"
"#;

    /// A CIS2 person with `role` at RX4, roles at userinfo as CIS2 gives them.
    fn cis2_person(sub: &str, role_code: &str, acr: &str) -> Value {
        json!({
            "sub": sub, "email": format!("{sub}@nhs.net"), "name": "Test Person", "acr": acr,
            "nhsid_nrbac_roles": [{"person_orgid": "1", "person_roleid": "2", "org_code": "RX4",
                                   "role_name": "\"Clinical\"", "role_code": role_code}],
            "roles_at": "userinfo",
        })
    }

    /// A server with providers `cis2` (private_key_jwt, userinfo, AAL3) and `entra` (a
    /// client secret, app roles and groups in the ID token), passwords on.
    struct Setup {
        cis2: Provider,
        entra: Provider,
        server: Server,
        dir: tempfile::TempDir,
    }

    fn setup(passwords: bool) -> Setup {
        let dir = tempfile::tempdir().expect("a directory");
        let db = dir.path().join("tether.db");
        tests::create_accounts(
            &db,
            &[tests::User { username: "asha", role: server::accounts::Role::Practitioner, teams: &["north"] }],
        );
        let cis2 = Provider::start();
        let entra = Provider::start_with(&["--client-secret", "entra-test-secret"]);
        let addr = tests::free_addr();
        let cis2_extra = format!(
            "{}userinfo = true\nscopes = [\"openid\", \"profile\", \"email\", \"nationalrbacaccess\"]\n\
             acr_levels = [\"AAL1_USERPASS\", \"AAL2_OR_AAL3_ANY\", \"AAL3_ANY\"]\nmin_acr = \"AAL3_ANY\"\n",
            oidc::private_key_jwt()
        );
        let entra_extra =
            "client_secret_env = \"TETHER_TEST_ENTRA_SECRET\"\nclient_secret_method = \"client_secret_post\"\n";
        let settings = oidc::settings(
            dir.path(),
            addr,
            passwords,
            &[
                Configured { id: "cis2", name: "NHS CIS2", provider: &cis2, extra: &cis2_extra },
                Configured { id: "entra", name: "Entra ID", provider: &entra, extra: entra_extra },
            ],
            MAPPING,
        );
        // The client secret is in the server's environment, as the settings say.
        let server = Server::start_at(&db, addr, Some(&settings), &[("TETHER_TEST_ENTRA_SECRET", "entra-test-secret")]);
        Setup { cis2, entra, server, dir }
    }

    fn db(setup: &Setup) -> rusqlite::Connection {
        server::db::open(&setup.dir.path().join("tether.db")).expect("open the database")
    }

    /// The audit log's sign-in entries: (action, username, detail).
    fn sign_in_audit(setup: &Setup) -> Vec<(String, String, String)> {
        db(setup)
            .prepare("SELECT action, username, detail FROM audit WHERE action LIKE 'oidc_%' ORDER BY n")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
            .expect("the audit log")
    }

    /// A user's role and teams as stored.
    fn placement(setup: &Setup, username: &str) -> (String, Vec<String>) {
        let conn = db(setup);
        let (id, role): (String, String) = conn
            .query_row("SELECT id, role FROM users WHERE username = ?1", [username], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("the user");
        let teams = conn
            .prepare("SELECT team_id FROM user_teams WHERE user_id = ?1 ORDER BY team_id")
            .and_then(|mut s| s.query_map([&id], |r| r.get(0))?.collect())
            .expect("teams");
        (role, teams)
    }

    #[test]
    fn a_cis2_user_signs_in_to_the_dashboard_placed_by_their_role_and_audited() {
        let setup = setup(true);
        setup.cis2.person(cis2_person("555000000001", "S8000:G8000:R8001", "AAL3_ANY"));
        let mut browser = Browser::default();
        let login = browser.get(&format!("{}/dashboard/login", setup.server.url()));
        assert!(login.body.contains("Sign in with NHS CIS2") && login.body.contains("Sign in with Entra ID"));
        assert!(login.body.contains("type=\"password\""), "passwords are on");

        let page = browser.sign_in(&setup.server, "cis2");
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("Signed in as <strong>cis2:555000000001@nhs.net</strong>"), "{}", page.body);
        assert!(page.body.contains("http-equiv=\"refresh\" content=\"0; url=/dashboard\""), "{}", page.body);
        assert!(browser.cookie("tether_oidc").is_none(), "the pending sign-in's cookie is cleared");
        let caseload = browser.get(&format!("{}/dashboard", setup.server.url()));
        assert_eq!(caseload.status, 200);
        assert!(
            caseload.body.contains("Signed in as <strong>cis2:555000000001@nhs.net</strong> (practitioner, north)")
        );

        // The provider saw Tether authenticate with private_key_jwt, ask for AAL3, and
        // the roles came from userinfo (the ID token had none).
        let log = setup.cis2.log();
        let exchange = log.iter().find(|e| e["grant_type"] == "authorization_code").expect("an exchange");
        assert_eq!((&exchange["method"], &exchange["ok"]), (&json!("private_key_jwt"), &json!(true)), "{log:?}");
        assert_eq!(exchange["acr_values"], "AAL3_ANY");
        assert_eq!(exchange["scope"], "openid profile email nationalrbacaccess");

        assert_eq!(placement(&setup, "cis2:555000000001@nhs.net"), ("practitioner".into(), vec!["north".into()]));
        // A new role at the trust is Tether's at the next sign-in.
        setup.cis2.person(cis2_person("555000000001", "S8000:G8000:R8000", "AAL3_ANY"));
        assert_eq!(Browser::default().sign_in(&setup.server, "cis2").status, 200);
        assert_eq!(placement(&setup, "cis2:555000000001@nhs.net"), ("team_manager".into(), vec!["north".into()]));
        // The trust takes the role away: refused, and out of every team at once, so the
        // session already open sees nothing more.
        setup.cis2.person(cis2_person("555000000001", "S8000:G8000:R0000", "AAL3_ANY"));
        refused(&setup, &setup.cis2, "cis2", None, 403, "no rule of Tether");
        assert_eq!(placement(&setup, "cis2:555000000001@nhs.net"), ("team_manager".into(), vec![]));
        let caseload = browser.get(&format!("{}/dashboard", setup.server.url()));
        assert!(!caseload.body.contains("DEMO-") && caseload.body.contains("(team manager, )"), "{}", caseload.body);
        let mut audit = sign_in_audit(&setup);
        assert_eq!(audit.pop().map(|(action, _, _)| action).as_deref(), Some("oidc_sign_in_refused"));
        assert_eq!(audit.len(), 2, "{audit:?}");
        for (action, username, detail) in &audit {
            assert_eq!((action.as_str(), username.as_str()), ("oidc_sign_in", "cis2:555000000001@nhs.net"));
            assert_eq!(detail, "provider=cis2 subject=555000000001");
        }
        // One user, no password: a password sign-in under that name, with no password or
        // a guess, is a wrong password like any other.
        for password in ["", "guess"] {
            let (status, body) = call_json(
                &setup.server,
                "POST",
                "/v1/auth/login",
                None,
                Some(json!({"username": "cis2:555000000001@nhs.net", "password": password, "device_id": "d"})),
            );
            assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_credentials")), "{body}");
        }
    }

    #[test]
    fn an_entra_user_is_placed_by_app_role_or_group_and_the_same_name_from_two_providers_does_not_collide() {
        let setup = setup(true);
        setup.entra.person(
            json!({"sub": "entra-sub-1", "preferred_username": "jo@trust.nhs.uk", "roles": ["Tether.Manager"]}),
        );
        assert_eq!(Browser::default().sign_in(&setup.server, "entra").status, 200);
        assert_eq!(placement(&setup, "entra:jo@trust.nhs.uk"), ("team_manager".into(), vec!["south".into()]));
        let log = setup.entra.log();
        assert!(log.iter().any(|e| e["method"] == "client_secret_post" && e["ok"] == true), "{log:?}");

        setup.entra.person(json!({"sub": "entra-sub-2", "preferred_username": "jo@trust.nhs.uk",
                                  "groups": ["0B6C2F1A-7D0E-4C55-9A8E-3F1D2C4B5A69"]}));
        assert_eq!(Browser::default().sign_in(&setup.server, "entra").status, 200);
        // Another person with the same name gets a name of their own.
        assert_eq!(placement(&setup, "entra:jo@trust.nhs.uk~2"), ("practitioner".into(), vec!["south".into()]));
        let (status, _) = call_json(&setup.server, "GET", "/healthz", None, None);
        assert_eq!(status, 200);
    }

    /// Signs in at the dashboard with the next ID token changed as `change` says, and
    /// asserts a refusal with `status` whose page says `says`; no session is made.
    fn refused(setup: &Setup, provider: &Provider, id: &str, change: Option<Value>, status: u16, says: &str) {
        if let Some(change) = change {
            provider.next(change);
        }
        let mut browser = Browser::default();
        let page = browser.sign_in(&setup.server, id);
        assert_eq!(page.status, status, "{says}: {}", page.body);
        assert!(page.body.contains(says), "{says:?} in {}", page.body);
        assert!(browser.cookie("tether_session").is_none(), "no session after: {says}");
        assert_eq!(browser.get(&format!("{}/dashboard", setup.server.url())).status, 303, "signed out after: {says}");
    }

    #[test]
    fn hostile_or_wrong_id_tokens_are_refused_with_a_page_that_says_why() {
        let setup = setup(true);
        let cis2 = &setup.cis2;
        cis2.person(cis2_person("555000000002", "S8000:G8000:R8001", "AAL3_ANY"));
        let cases: [(Value, u16, &str); 8] = [
            (json!({"nonce": "another-sign-ins-nonce"}), 401, "does not carry this sign-in"),
            (json!({"expired": true}), 401, "the ID token has expired"),
            (json!({"aud": "another-client"}), 401, "for another client"),
            (json!({"iss": "https://evil.example.org"}), 401, "issued by someone else"),
            (json!({"acr": "AAL2_OR_AAL3_ANY"}), 403, "assurance `AAL2_OR_AAL3_ANY` is below the `AAL3_ANY`"),
            (json!({"sign_with": "unserved"}), 401, "publishes no key `never-published`"),
            (json!({"sign_with": "none"}), 401, "not a signed JWT"),
            (json!({"sign_with": "same-kid-other-key"}), 401, "signature does not verify"),
        ];
        for (change, status, says) in cases {
            refused(&setup, cis2, "cis2", Some(change), status, says);
        }
        // And the provider's own refusal, passed on.
        let denied = Browser::default()
            .get(&format!("{}/dashboard/oidc/callback?state=x&error=access_denied", setup.server.url()));
        assert_eq!(denied.status, 400, "an answer to no sign-in started here: {}", denied.body);
        // Nobody was made; only the refusals of people the provider vouched for are audited.
        let users: i64 = db(&setup).query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0)).expect("a count");
        assert_eq!(users, 1, "only asha");
        let audit = sign_in_audit(&setup);
        assert!(audit.is_empty(), "an ID token that fails its checks vouches for no one: {audit:?}");
    }

    #[test]
    fn a_person_the_mapping_does_not_place_is_refused_saying_what_the_provider_sent() {
        let setup = setup(true);
        setup.cis2.person(cis2_person("555000000003", "S0000:G0000:R0001", "AAL3_ANY"));
        refused(&setup, &setup.cis2, "cis2", None, 403, "the provider sent NHS CIS2 roles S0000:G0000:R0001 at RX4");
        // A rule for a team that does not exist places no one either.
        setup.cis2.person(cis2_person("555000000004", "S9:G9:R9999", "AAL3_ANY"));
        refused(&setup, &setup.cis2, "cis2", None, 403, "only in teams that do not exist here: east");
        setup.entra.person(json!({"sub": "entra-sub-9", "roles": ["Other.Role"]}));
        refused(&setup, &setup.entra, "entra", None, 403, "app roles Other.Role");
        let audit = sign_in_audit(&setup);
        let details: Vec<&str> = audit.iter().map(|(_, _, d)| d.as_str()).collect();
        assert_eq!(
            details,
            [
                "provider=cis2 subject=555000000003 refused=not_placed",
                "provider=cis2 subject=555000000004 refused=not_placed",
                "provider=entra subject=entra-sub-9 refused=not_placed",
            ]
        );
        assert!(audit.iter().all(|(action, _, _)| action == "oidc_sign_in_refused"));
    }

    #[test]
    fn after_the_provider_rotates_its_key_the_new_key_is_fetched_and_the_retired_one_refused() {
        let setup = setup(true);
        setup.cis2.person(cis2_person("555000000005", "S8000:G8000:R8001", "AAL3_ANY"));
        assert_eq!(Browser::default().sign_in(&setup.server, "cis2").status, 200, "the first key");
        let rotated = setup.cis2.rotate();
        assert_ne!(rotated["kid"], rotated["retired_kid"]);
        assert_eq!(Browser::default().sign_in(&setup.server, "cis2").status, 200, "the new key, fetched on its kid");
        let retired = format!("publishes no key `{}`", rotated["retired_kid"].as_str().expect("a kid"));
        refused(&setup, &setup.cis2, "cis2", Some(json!({"sign_with": "retired"})), 401, &retired);
        assert_eq!(Browser::default().sign_in(&setup.server, "cis2").status, 200, "still the new key");
    }

    #[test]
    fn a_client_the_provider_does_not_know_is_refused_at_the_token_endpoint() {
        let dir = tempfile::tempdir().expect("a directory");
        let db = dir.path().join("tether.db");
        tests::create_accounts(&db, &[]);
        // The provider knows Tether by another key than the one Tether signs with.
        let provider = Provider::start_with(&["--client-key", &oidc::other_key().to_string_lossy()]);
        provider.person(json!({"sub": "s", "roles": ["Tether.Manager"]}));
        let addr = tests::free_addr();
        let extra = oidc::private_key_jwt();
        let mapping = "[[rule]]\napp_role = \"Tether.Manager\"\nteams = [\"north\"]\nrole = \"team_manager\"\n";
        let settings = oidc::settings(
            dir.path(),
            addr,
            true,
            &[Configured { id: "idp", name: "The IdP", provider: &provider, extra: &extra }],
            mapping,
        );
        let server = Server::start_at(&db, addr, Some(&settings), &[]);
        let page = Browser::default().sign_in(&server, "idp");
        assert_eq!(page.status, 401, "{}", page.body);
        assert!(page.body.contains("refused the sign-in: invalid_client"), "{}", page.body);
        let log = provider.log();
        assert!(
            log.iter().any(|e| e["ok"] == false && e["reason"].as_str().is_some_and(|r| r.contains("does not verify"))),
            "{log:?}"
        );
    }

    #[test]
    fn a_phone_signs_in_through_the_system_browser_and_syncs_and_a_stale_sign_in_fails_clearly() {
        let setup = setup(false);
        setup.cis2.person(cis2_person("555000000006", "S8000:G8000:R8001", "AAL3_ANY"));
        let store = tempfile::tempdir().expect("a store");
        let key = StoreKey::generate().expect("a key");
        let http = Http::new(&setup.server.url());
        let now = Timestamp::now();
        let started = {
            let mut core = Core::open(store.path(), &key).expect("a store");
            let started = http.begin_identity_sign_in(&mut core, Some("cis2"), None, now).expect("started");
            assert_eq!(started.redirect_uri, oidc::PHONE_REDIRECT);
            started
            // The app is stopped while the browser is open.
        };
        assert!(started.authorization_url.contains("code_challenge_method=S256"), "{}", started.authorization_url);
        assert!(!started.authorization_url.contains("code_verifier"));
        let redirect = oidc::phone_browser(&started.authorization_url);
        assert!(redirect.starts_with(oidc::PHONE_REDIRECT), "{redirect}");

        // A redirect from another sign-in leaves this one pending.
        let mut core = Core::open(store.path(), &key).expect("the store again");
        let other = redirect.replace("state=", "state=x");
        let error = http.finish_identity_sign_in(&mut core, &other, Timestamp::now()).expect_err("another state");
        assert!(error.to_string().contains("belongs to another sign-in"), "{error}");
        let username = http.finish_identity_sign_in(&mut core, &redirect, Timestamp::now()).expect("signed in");
        assert_eq!(username, "cis2:555000000006@nhs.net");
        assert_eq!(client_core::remote::signed_in_user(&core).expect("read").as_deref(), Some(username.as_str()));
        let summary = http.sync(&mut core, Timestamp::now).expect("a sync with the provider's person");
        assert_eq!(summary.round_trips, 1, "{summary:?}");

        // Finished: the same redirect again is a clear failure, and so is an old one.
        let again = http.finish_identity_sign_in(&mut core, &redirect, Timestamp::now()).expect_err("finished");
        assert!(again.to_string().contains("no sign-in was started on this device"), "{again}");
        http.begin_identity_sign_in(&mut core, Some("cis2"), None, now).expect("started");
        let late = now.checked_add(jiff::SignedDuration::from_mins(11)).expect("a time");
        let expired = http.finish_identity_sign_in(&mut core, &redirect, late).expect_err("expired");
        assert!(expired.to_string().contains("has expired"), "{expired}");

        // The audit log names the phone as the device, and the password route is off.
        let audit = sign_in_audit(&setup);
        assert_eq!(audit.len(), 1, "{audit:?}");
        let device: String = db(&setup)
            .query_row("SELECT device FROM audit WHERE action = 'oidc_sign_in'", [], |r| r.get(0))
            .expect("a row");
        assert_eq!(device, core.device());
        let (status, body) = call_json(
            &setup.server,
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username": "asha", "password": tests::PASSWORD, "device_id": "d"})),
        );
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("passwords_off")), "{body}");
    }

    /// The `tether-field` binary of this test's profile, built (or found fresh) by cargo:
    /// a test of the `tests` package does not build another package's binaries.
    fn tether_field() -> std::path::PathBuf {
        let exe = std::env::current_exe().expect("the test binary");
        let profile_dir = exe.parent().and_then(std::path::Path::parent).expect("the target profile directory");
        let target = profile_dir.parent().expect("the target directory");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "client-core", "--bin", "tether-field", "--profile", profile])
            .arg("--target-dir")
            .arg(target)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cannot build tether-field");
        profile_dir.join("tether-field")
    }

    #[test]
    fn tether_field_login_oidc_prints_the_address_and_reads_the_redirect() {
        use std::io::{BufRead, BufReader, Write};
        use std::process::{Command, Stdio};

        let setup = setup(true);
        setup.entra.person(json!({"sub": "entra-cli", "preferred_username": "cli.user", "roles": ["Tether.Manager"]}));
        let store = tempfile::tempdir().expect("a store");
        let mut child = Command::new(tether_field())
            .args(["--store", &store.path().to_string_lossy(), "login", "--oidc", "--server", &setup.server.url()])
            .args(["--provider", "entra"])
            .env_remove("TETHER_STORE_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tether-field");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut url = String::new();
        stdout.read_line(&mut url).expect("the address");
        assert!(url.starts_with(&setup.entra.issuer), "the provider's address: {url}");
        let redirect = oidc::phone_browser(url.trim());
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{redirect}").expect("the redirect");
        drop(stdin);
        let output = child.wait_with_output().expect("tether-field ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(stderr.contains("open this address in a browser"), "{stderr}");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).expect("the rest");
        let answer: Value = serde_json::from_str(&rest).expect("JSON");
        assert_eq!(answer["signed_in"], "entra:cli.user");
        // Signed in: the next command syncs.
        let sync = Command::new(tether_field())
            .args(["--store", &store.path().to_string_lossy(), "sync"])
            .output()
            .expect("run tether-field sync");
        assert!(sync.status.success(), "{}", String::from_utf8_lossy(&sync.stderr));
    }

    #[test]
    fn the_token_route_refuses_what_a_phone_must_not_send() {
        let setup = setup(true);
        setup.cis2.person(cis2_person("555000000007", "S8000:G8000:R8001", "AAL3_ANY"));
        let verifier = "v".repeat(43);
        let base = json!({"provider": "cis2", "code": "c", "code_verifier": verifier, "redirect_uri": oidc::PHONE_REDIRECT,
                          "nonce": "n".repeat(22), "device_id": "phone-1"});
        let with = |field: &str, value: Value| {
            let mut body = base.clone();
            body[field] = value;
            call_json(&setup.server, "POST", "/v1/auth/oidc/token", None, Some(body))
        };
        for (field, value, says) in [
            ("provider", json!("nope"), "this server offers cis2, entra"),
            ("redirect_uri", json!("https://evil.example.org/cb"), "not one registered for the phones"),
            ("code_verifier", json!("short"), "`code_verifier`"),
            ("nonce", json!("x"), "`nonce`"),
            ("code", json!(""), "`code`"),
        ] {
            let (status, body) = with(field, value);
            assert_eq!(status, 422, "{field}: {body}");
            assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains(says)), "{field}: {body}");
        }
        // A made-up code: the provider refuses it, and Tether says so.
        let (status, body) = with("code", json!("made-up"));
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("provider_refused")), "{body}");
        // The authorize route takes only well-formed one-time values.
        let (status, body) = call_json(
            &setup.server,
            "POST",
            "/v1/auth/oidc/authorize",
            None,
            Some(json!({"code_challenge": "plain", "state": "s".repeat(20), "nonce": "n".repeat(20)})),
        );
        assert_eq!(status, 422, "{body}");
        let (status, body) = call_json(
            &setup.server,
            "POST",
            "/v1/auth/oidc/authorize",
            None,
            Some(
                json!({"code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "state": "s".repeat(20), "nonce": "n".repeat(20)}),
            ),
        );
        assert_eq!(status, 422, "two providers: one must be named: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("name one")), "{body}");

        // Starting a dashboard sign-in needs no account, so the sign-ins under way are
        // bounded: with the table full, a new one is refused and nothing is kept.
        let mut conn = db(&setup);
        let tx = conn.transaction().expect("a transaction");
        let far = Timestamp::now().as_second() + 3600;
        for i in 0..server::auth::store::MAX_PENDING_SIGN_INS {
            tx.execute(
                "INSERT INTO oidc_pending VALUES (?1, 'b', 'cis2', 'n', 'v', ?2)",
                rusqlite::params![format!("filler-{i}"), far],
            )
            .expect("a row");
        }
        tx.commit().expect("commit");
        let page = Browser::default().get(&format!("{}/dashboard/oidc/cis2/start", setup.server.url()));
        assert_eq!(page.status, 503, "{}", page.body);
        assert!(page.body.contains("Too many sign-ins are under way"), "{}", page.body);
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM oidc_pending", [], |r| r.get(0)).expect("a count");
        assert_eq!(count, server::auth::store::MAX_PENDING_SIGN_INS);
    }
}
