//! The generated bindings over the real library: Python and Kotlin (on the JVM) open an
//! encrypted store, record a home visit and a calling card, read the next actions, sign
//! in and sync with a real server on loopback through an async transport of their own
//! (asyncio, coroutines), get typed errors that say what happened, and close the store;
//! the Swift bindings are generated and name the API.
//!
//! A test that needs a program from outside (python3, kotlinc, java and JNA, Node.js)
//! lives in a module named `needs_<program>` and fails, naming what to install, when it
//! is missing. `.ci/run` installs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use camino::Utf8PathBuf;
use server::accounts::Role;
use tests::{PASSWORD, Server, User};
use uniffi::{GenerateOptions, TargetLanguage};

const USERNAME: &str = "asha";
/// A team manager, who revokes the device at the end of the Python test.
const MANAGER: &str = "mo";

/// The cdylib that cargo built for this test (the package's library, with all its crate
/// types, is built before its integration tests).
fn library() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/bindings-<hash>
    let deps = exe.parent().expect("the deps directory");
    let name = format!("{}tether_ffi{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let candidates = [deps.join(&name), deps.parent().expect("the profile directory").join(&name)];
    candidates.iter().find(|p| p.exists()).cloned().unwrap_or_else(|| panic!("no {name} beside {}", deps.display()))
}

/// Generates the bindings for `language` into `out`, with the library copied beside them
/// (where the Python and Kotlin bindings look for it).
fn generate(language: TargetLanguage, out: &Path) -> PathBuf {
    let library = library();
    let source = Utf8PathBuf::from_path_buf(library.clone()).expect("a UTF-8 library path");
    let out_dir = Utf8PathBuf::from_path_buf(out.to_path_buf()).expect("a UTF-8 output path");
    uniffi::generate(GenerateOptions {
        languages: vec![language],
        source,
        out_dir,
        // Where the crate's uniffi.toml is (the workspace builds UniFFI without cargo
        // metadata to find it).
        config_override: Some(
            Utf8PathBuf::from_path_buf(Path::new(env!("CARGO_MANIFEST_DIR")).join("bindgen.toml"))
                .expect("a UTF-8 path"),
        ),
        format: false,
        crate_filter: None,
        metadata_no_deps: true,
    })
    .expect("generate the bindings");
    let copy = out.join(library.file_name().expect("a file name"));
    std::fs::copy(&library, &copy).expect("copy the library beside the bindings");
    copy
}

/// A server on loopback with teams `north` and `south`, the practitioner `asha` and the
/// team manager `mo`.
fn server(dir: &Path) -> Server {
    let db = dir.join("server.db");
    tests::create_accounts(
        &db,
        &[
            User { username: USERNAME, role: Role::Practitioner, teams: &["north"] },
            User { username: MANAGER, role: Role::TeamManager, teams: &["north"] },
        ],
    );
    Server::start(&db)
}

/// A program on the PATH, or a failure that says how to install it.
fn tool(name: &str, install: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} not found on the PATH: {install} (see .ci/run)"))
}

/// Runs a command, showing its output, and asserts that it succeeded.
fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--- {what} stdout ---\n{stdout}\n--- {what} stderr ---\n{stderr}");
    assert!(output.status.success(), "{what} failed ({}):\n{stdout}\n{stderr}", output.status);
}

fn with_server<'a>(command: &'a mut Command, server: &Server) -> &'a mut Command {
    command
        .env("TETHER_SERVER", server.url())
        .env("TETHER_USERNAME", USERNAME)
        .env("TETHER_MANAGER", MANAGER)
        .env("TETHER_PASSWORD", PASSWORD)
}

/// The Python bindings, driven from asyncio.
mod needs_python3 {
    use std::path::Path;
    use std::process::Command;

    #[test]
    fn python_records_syncs_awaits_and_gets_errors_that_say_what_happened() {
        let python = super::tool("python3", "install Python 3 (Debian: apt-get install python3)");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let bindings = dir.path().join("python");
        super::generate(uniffi::TargetLanguage::Python, &bindings);
        let server = super::server(dir.path());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/test_ffi.py");
        super::run(
            super::with_server(Command::new(python).arg(script).env("TETHER_BINDINGS", &bindings), &server),
            "python3 test_ffi.py",
        );
    }
}

/// The Kotlin bindings on the JVM, driven from coroutines: kotlinc (npm's
/// `kotlin-compiler`, whose `lib/` also holds the kotlinx-coroutines jar the bindings'
/// suspend functions need), a JDK and JNA.
mod needs_kotlin {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const KOTLINC: &str = "install it with `npm install -g kotlin-compiler@2.4.20` and put its bin/ on the PATH";

    /// A jar named by an environment variable, or found at `default`, or a failure that
    /// says how to get it.
    fn jar(variable: &str, default: PathBuf, install: &str) -> PathBuf {
        let path = std::env::var_os(variable).map_or(default, PathBuf::from);
        assert!(path.is_file(), "{} not found: {install}, or set {variable} (see .ci/run)", path.display());
        path
    }

    #[test]
    fn kotlin_records_syncs_suspends_and_gets_errors_that_say_what_happened() {
        let kotlinc = super::tool("kotlinc", KOTLINC);
        let java = super::tool("java", "install a JRE (Debian: apt-get install default-jre-headless)");
        let jna = jar(
            "JNA_JAR",
            PathBuf::from("/usr/share/java/jna.jar"),
            "install JNA (Debian: apt-get install libjna-java)",
        );
        // kotlinc is bin/kotlinc in the compiler's folder, often through a symbolic link.
        let home = std::fs::canonicalize(&kotlinc)
            .ok()
            .and_then(|real| real.parent().and_then(Path::parent).map(Path::to_path_buf))
            .unwrap_or_default();
        let coroutines = jar(
            "KOTLINX_COROUTINES_JAR",
            home.join("lib/kotlinx-coroutines-core-jvm.jar"),
            "it comes with npm's kotlin-compiler (lib/kotlinx-coroutines-core-jvm.jar)",
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let bindings = dir.path().join("kotlin");
        super::generate(uniffi::TargetLanguage::Kotlin, &bindings);
        let kotlin_sources = bindings.join("uniffi/tether/tether.kt");
        assert!(kotlin_sources.is_file(), "no {}", kotlin_sources.display());
        let test = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/TestFfi.kt");
        let jar = dir.path().join("test.jar");
        let compile_classpath = std::env::join_paths([&jna, &coroutines]).expect("a classpath");
        // One compile: the bindings and the test together.
        super::run(
            Command::new(kotlinc)
                .arg(&kotlin_sources)
                .arg(&test)
                .arg("-classpath")
                .arg(&compile_classpath)
                .arg("-include-runtime")
                .arg("-nowarn")
                .arg("-d")
                .arg(&jar),
            "kotlinc",
        );
        let classpath = std::env::join_paths([&jar, &jna, &coroutines]).expect("a classpath");
        let server = super::server(dir.path());
        super::run(
            super::with_server(
                Command::new(java)
                    .arg(format!("-Djna.library.path={}", bindings.display()))
                    .arg("-cp")
                    .arg(classpath)
                    .arg("TestFfiKt"),
                &server,
            ),
            "java TestFfiKt",
        );
    }
}

#[test]
fn swift_bindings_name_the_api() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    generate(TargetLanguage::Swift, dir.path());
    let swift = std::fs::read_to_string(dir.path().join("tether.swift")).expect("tether.swift");
    // Unformatted output splits some declarations over lines: compare without white space.
    let compact: String = swift.split_whitespace().collect();
    for name in [
        "open class Tether",
        "public protocol TetherProtocol: AnyObject, Sendable",
        "public static func `open`(storeDir: String, key: Data)",
        "open func nextActions(now: Date)throws -> [NextAction]",
        "open func nextDue(now: Date)throws -> NextDue?",
        "open func record(episodeId: String, body: EventBody, note: String?, at: Date)throws -> String",
        "open func setFact(episodeId: String, fact: FactValue, at: Date)throws -> String",
        "open func close()throws",
        "public enum HoldReason",
        "case notSignedInHere(recordId: String?, by: String",
        "case EpisodeFull(reason: String, bytes: UInt64, budget: UInt64",
        "open func sync(transport: Transport)async throws -> SyncSummary",
        "open func signIn(transport: Transport, username: String, password: String)async throws",
        "public protocol Transport",
        "func post(request: HttpRequest)async throws -> HttpResponse",
        "public enum TetherError: Swift.Error",
        "case WipeRequired(reason: String",
        "case Closed(reason: String",
        "case InvalidInput(reason: String, field: String",
        "public enum EventBody",
        "case homeVisit(announced: Bool, outcome: VisitOutcome, location: Location?",
        "public struct NextAction",
    ] {
        let wanted: String = name.split_whitespace().collect();
        assert!(compact.contains(&wanted), "tether.swift lacks `{name}`");
    }
    let header = std::fs::read_to_string(dir.path().join("tetherFFI.h")).expect("tetherFFI.h");
    assert!(header.contains("uniffi_tether_ffi_fn_constructor_tether_open"), "the header lacks the constructor");
    let modulemap = std::fs::read_to_string(dir.path().join("tetherFFI.modulemap")).expect("tetherFFI.modulemap");
    assert!(modulemap.contains("module tetherFFI"), "{modulemap}");
}

/// The phone's sign-in with the trust's identity provider through the Python bindings: the
/// system browser (urllib, redirects not followed), an app restart while it is open, the
/// code exchanged by Tether, a sync as that person, and a person the mapping refuses.
mod needs_oidc_provider {
    use std::path::Path;
    use std::process::Command;

    use serde_json::json;
    use tests::Server;
    use tests::oidc::{self, Configured, Provider};

    #[test]
    fn python_signs_a_phone_in_with_the_identity_provider() {
        let python = super::tool("python3", "install Python 3 (Debian: apt-get install python3)");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let bindings = dir.path().join("python");
        super::generate(uniffi::TargetLanguage::Python, &bindings);
        let provider = Provider::start();
        provider.person(json!({"sub": "ffi-person-1", "preferred_username": "pat", "roles": ["Tether.Practitioner"]}));
        let db = dir.path().join("server.db");
        tests::create_accounts(&db, &[]);
        let addr = tests::free_addr();
        let extra = oidc::private_key_jwt();
        let mapping = "[[rule]]\napp_role = \"Tether.Practitioner\"\nteams = [\"north\"]\nrole = \"practitioner\"\n";
        let settings = oidc::settings(
            dir.path(),
            addr,
            false,
            &[Configured { id: "trust", name: "The trust", provider: &provider, extra: &extra }],
            mapping,
        );
        let server = Server::start_at(&db, addr, Some(&settings), &[]);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/test_ffi.py");
        super::run(
            Command::new(python)
                .arg(script)
                .env("TETHER_BINDINGS", &bindings)
                .env("TETHER_SERVER", server.url())
                .env("TETHER_USERNAME", "unused")
                .env("TETHER_MANAGER", "unused")
                .env("TETHER_PASSWORD", "unused")
                .env("TETHER_FFI_PART", "oidc")
                .env("TETHER_OIDC_ISSUER", &provider.issuer)
                .env("TETHER_OIDC_REDIRECT", oidc::PHONE_REDIRECT)
                .env("TETHER_OIDC_USERNAME", "trust:pat"),
            "python3 test_ffi.py (oidc)",
        );
    }
}
