//! The rule table as `tether pathway rules` prints it: `docs/rules.md` is that print,
//! and every action a scenario raises is checked against its printed row (in
//! `support::eval`); these tests check the check, and the committed copy.

use episode::pathway::{Calendar, Code, Defaults, evaluate, table};

use crate::support::*;

/// The command that prints the table into the repository.
const REGENERATE: &str = "cargo run -q -p server --bin tether -- pathway rules > docs/rules.md";

#[test]
fn docs_rules_md_is_the_printed_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/rules.md");
    let committed = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read docs/rules.md ({e}): write it with `{REGENERATE}`"));
    let printed = table::render(&Defaults::default());
    if committed != printed {
        let line = committed
            .lines()
            .zip(printed.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| committed.lines().count().min(printed.lines().count()) + 1, |i| i + 1);
        panic!(
            "docs/rules.md is not the table the rules print (first difference at line {line}): \
             regenerate it with `{REGENERATE}` (without TETHER_PATHWAY_DEFAULTS set) and commit it"
        );
    }
}

#[test]
fn every_row_reads_back_from_the_print() {
    let rows = printed_rows();
    assert_eq!(rows.len(), table::rules().count(), "{rows:#?}");
    for code in Code::ALL {
        assert!(rows.iter().any(|r| r.code == code.as_str()), "no printed row for {code}");
    }
}

#[test]
fn an_action_unlike_its_printed_row_is_caught() {
    let calendar = Calendar::england_and_wales();
    let ep = episode("urgent_referral").at("2026-03-02T10:00:00Z", missed_initial());
    let evaluation = evaluate(&ep.build(), "2026-03-02T12:00:00Z".parse().unwrap(), &calendar);
    let contact = evaluation.actions.iter().find(|a| a.code == Code::ContactPatient).expect("contact_patient");
    assert_eq!(matches_its_printed_row(contact, &calendar), Ok(()));

    let mut wrong = contact.clone();
    wrong.priority = episode::pathway::Priority::Routine;
    assert!(matches_its_printed_row(&wrong, &calendar).is_err(), "a wrong priority passed");
    let mut wrong = contact.clone();
    wrong.owner = episode::pathway::Role::TeamBase;
    assert!(matches_its_printed_row(&wrong, &calendar).is_err(), "a wrong owner passed");
    let mut wrong = contact.clone();
    wrong.cites = "5.1.2".into();
    assert!(matches_its_printed_row(&wrong, &calendar).is_err(), "a wrong section passed");
    let mut wrong = contact.clone();
    wrong.due = "2026-03-03T17:00:00Z".parse().unwrap();
    assert!(matches_its_printed_row(&wrong, &calendar).is_err(), "a wrong deadline passed");
}
