//! The library the apps ship carries no HTTP client and no TLS of its own (the host's
//! `Transport` carries the bytes), and none of the binding generator.

use std::process::Command;

#[test]
fn the_library_depends_on_no_http_client_tls_or_generator() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["tree", "-p", "ffi", "--edges", "normal", "--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    let crates: Vec<&str> = tree.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert!(crates.contains(&"client-core") && crates.contains(&"uniffi"), "{tree}");
    for banned in ["ureq", "rustls", "ring", "clap", "uniffi_bindgen", "cargo_metadata"] {
        assert!(!crates.contains(&banned), "the library depends on {banned}:\n{tree}");
    }
}
