//! The hazard log (`docs/clinical-safety/hazard-log.md`) names, for every control, the
//! test that proves it: each name must be a test function in the file it names.

use std::path::Path;

#[test]
fn every_control_in_the_hazard_log_names_a_test_that_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let log = std::fs::read_to_string(root.join("docs/clinical-safety/hazard-log.md")).expect("the hazard log");
    let mut named = 0;
    let mut missing = Vec::new();
    for cite in log.split('`').skip(1).step_by(2) {
        let Some((file, name)) = cite.split_once("::") else { continue };
        if !file.ends_with(".rs") {
            continue;
        }
        named += 1;
        let source = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        let defined = source.contains(&format!("fn {name}()")) && {
            // The function is a test: an attribute on one of the lines just above it.
            let at = source.find(&format!("fn {name}()")).unwrap_or(0);
            let before = &source[..at];
            let lines: Vec<&str> = before.lines().rev().take(3).collect();
            lines.iter().any(|l| l.contains("#[test]") || l.contains("#[tokio::test"))
                || on_both_backends(&source, name)
        };
        if !defined {
            missing.push(cite.to_owned());
        }
    }
    assert!(named >= 40, "the log names {named} tests");
    assert!(missing.is_empty(), "the hazard log names tests that do not exist: {missing:#?}");
}

/// Whether `name` is one of the tests a `backends!` (or `backends_blocking!`) invocation
/// runs on each backend (`server/tests/common`): such a test has no attribute of its own.
fn on_both_backends(source: &str, name: &str) -> bool {
    ["backends!(", "backends_blocking!("].iter().any(|macro_call| {
        source.match_indices(macro_call).any(|(at, call)| {
            let list = &source[at + call.len()..];
            let list = &list[..list.find(')').unwrap_or(list.len())];
            list.split(|c: char| c == ',' || c == ';' || c == ':' || c.is_whitespace()).any(|word| word == name)
        })
    })
}
