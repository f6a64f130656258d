//! WNB: a child not brought. Each miss counts; N = misses in the last 183 days.

use episode::pathway::{Priority, State};
use expect_test::expect;
use serde_json::json;

use crate::support::*;

#[test]
fn every_miss_the_impact_and_the_letter_and_the_second_informs_childrens_services() {
    let ep = episode("child_not_brought")
        .at("2026-03-02T10:00:00Z", not_brought())
        .at("2026-03-02T14:00:00Z", decided("impact_on_child", "yes"))
        .at("2026-03-03T10:00:00Z", letter("letter", "parent_carer", "was_not_brought"))
        .at("2026-04-06T09:00:00Z", not_brought());
    check(
        &ep,
        "2026-04-06T10:00:00Z",
        expect![[r#"
        consider_impact_on_child          done      2026-03-02T10:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [wnb; high; from e1] by e2
        send_was_not_brought_letter       done      2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  care_coordinator  [wnb; routine; from e1] by e3
        inform_childrens_services         open      2026-04-06T09:00:00Z -> 2026-04-07T16:00:00Z  care_coordinator  [wnb; high; from e4]
        consider_impact_on_child          open      2026-04-06T09:00:00Z -> 2026-04-07T16:00:00Z  care_coordinator  [wnb; high; from e4]
        send_was_not_brought_letter       open      2026-04-06T09:00:00Z -> 2026-04-08T16:00:00Z  care_coordinator  [wnb; routine; from e4]
    "#]],
    );
}

#[test]
fn the_third_miss_in_the_window_refers_the_same_day() {
    let ep = episode("child_not_brought")
        .at("2026-03-02T10:00:00Z", not_brought())
        .at("2026-03-03T10:00:00Z", attended())
        .at("2026-04-06T09:00:00Z", not_brought())
        .at("2026-05-11T09:00:00Z", not_brought());
    let evaluation = eval(&ep, "2026-05-11T10:00:00Z");
    let refer = action(&evaluation, "refer_to_childrens_services");
    assert_eq!(refer.trigger.to_string(), id(4));
    assert_eq!(refer.due.to_string(), "2026-05-11T22:59:59Z");
    assert_eq!(refer.priority, Priority::Urgent);
}

#[test]
fn a_miss_after_childrens_services_were_told_refers_at_the_second_miss() {
    let ep = episode("child_not_brought")
        .at("2026-03-02T10:00:00Z", not_brought())
        .at("2026-03-03T10:00:00Z", told("childrens_services", "phone"))
        .at("2026-04-06T09:00:00Z", not_brought());
    let evaluation = eval(&ep, "2026-04-06T10:00:00Z");
    assert_eq!(action(&evaluation, "refer_to_childrens_services").trigger.to_string(), id(3));
}

#[test]
fn no_second_referral_while_one_exists_in_the_window() {
    let ep = episode("child_not_brought")
        .at("2026-03-02T10:00:00Z", not_brought())
        .at("2026-03-09T10:00:00Z", not_brought())
        .at("2026-03-16T10:00:00Z", not_brought())
        .at("2026-03-16T12:00:00Z", referral("childrens_services", false))
        .at("2026-03-23T10:00:00Z", not_brought());
    let evaluation = eval(&ep, "2026-03-23T12:00:00Z");
    let refer = action(&evaluation, "refer_to_childrens_services");
    assert_eq!(refer.trigger.to_string(), id(3));
    assert_eq!(refer.state, State::Done);
}

#[test]
fn misses_outside_the_window_do_not_count() {
    let ep = episode("child_not_brought")
        .opened("2025-08-01T09:00:00Z")
        .at("2025-08-04T10:00:00Z", not_brought())
        .at("2026-03-02T10:00:00Z", not_brought());
    let evaluation = eval(&ep, "2026-03-02T12:00:00Z");
    assert!(evaluation.actions.iter().all(|a| a.code.as_str() != "inform_childrens_services"));
}

#[test]
fn children_known_to_childrens_services_inform_them_at_the_first_miss() {
    let ep = episode("child_not_brought")
        .fact("childrens_services_involved", json!(true))
        .at("2026-03-02T10:00:00Z", not_brought());
    let evaluation = eval(&ep, "2026-03-02T12:00:00Z");
    assert_eq!(action(&evaluation, "inform_childrens_services").due.to_string(), "2026-03-03T17:00:00Z");
}

#[test]
fn an_attendance_does_not_cancel_what_a_miss_calls_for() {
    let ep = episode("child_not_brought")
        .at("2026-03-02T10:00:00Z", not_brought())
        .at("2026-03-02T11:00:00Z", phone("parent_carer", "contact_made"));
    check(
        &ep,
        "2026-03-05T12:00:00Z",
        expect![[r#"
        consider_impact_on_child          overdue   2026-03-02T10:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [wnb; high; from e1]
        send_was_not_brought_letter       overdue   2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  care_coordinator  [wnb; routine; from e1]
    "#]],
    );
}

#[test]
fn every_row_survives_contact_and_discharge() {
    // Three misses in the window: all four rows are raised at the third; the child is
    // then brought, and discharged: every row stays owed, and the discharge says so.
    let ep = episode("child_not_brought")
        .at("2026-03-02T10:00:00Z", not_brought())
        .at("2026-03-09T10:00:00Z", not_brought())
        .at("2026-03-16T10:00:00Z", not_brought())
        .at("2026-03-17T10:00:00Z", attended())
        .at("2026-03-17T11:00:00Z", discharged(true));
    check(
        &ep,
        "2026-03-17T12:00:00Z",
        expect![[r#"
        consider_impact_on_child          overdue   2026-03-02T10:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [wnb; high; from e1]
        send_was_not_brought_letter       overdue   2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  care_coordinator  [wnb; routine; from e1]
        inform_childrens_services         overdue   2026-03-09T10:00:00Z -> 2026-03-10T17:00:00Z  care_coordinator  [wnb; high; from e2]
        consider_impact_on_child          overdue   2026-03-09T10:00:00Z -> 2026-03-10T17:00:00Z  care_coordinator  [wnb; high; from e2]
        send_was_not_brought_letter       overdue   2026-03-09T10:00:00Z -> 2026-03-11T17:00:00Z  care_coordinator  [wnb; routine; from e2]
        refer_to_childrens_services       overdue   2026-03-16T10:00:00Z -> 2026-03-16T23:59:59Z  care_coordinator  [wnb; urgent; from e3]
        inform_childrens_services         open      2026-03-16T10:00:00Z -> 2026-03-17T17:00:00Z  care_coordinator  [wnb; high; from e3]
        consider_impact_on_child          open      2026-03-16T10:00:00Z -> 2026-03-17T17:00:00Z  care_coordinator  [wnb; high; from e3]
        send_was_not_brought_letter       open      2026-03-16T10:00:00Z -> 2026-03-18T17:00:00Z  care_coordinator  [wnb; routine; from e3]
        ! DischargeWithoutMdt e5
        ! DischargeWithOpenActions e5: consider_impact_on_child, inform_childrens_services, refer_to_childrens_services, send_was_not_brought_letter
    "#]],
    );
}

#[test]
fn a_referral_for_any_reason_does_the_referral() {
    let mut referral = referral("childrens_services", false);
    referral["reason"] = json!("family_support");
    let ep = episode("child_not_brought")
        .at("2026-03-02T10:00:00Z", not_brought())
        .at("2026-03-09T10:00:00Z", not_brought())
        .at("2026-03-16T10:00:00Z", not_brought())
        .at("2026-03-16T12:00:00Z", referral);
    let evaluation = eval(&ep, "2026-03-16T13:00:00Z");
    let refer = action(&evaluation, "refer_to_childrens_services");
    assert_eq!(refer.state, State::Done);
    assert_eq!(refer.resolved_by.map(|u| u.to_string()), Some(id(4)));
}

#[test]
fn the_window_edge_is_exact_across_the_clock_change() {
    // 10:00 GMT on Monday 2 March; 183 days later is Tuesday 1 September, 10:00 BST
    // (09:00Z). A miss at exactly that moment counts the first (N = 2: inform
    // Children's Services); one a second later does not (N = 1).
    let at_the_edge = episode("child_not_brought")
        .at("2026-03-02T10:00:00Z", not_brought())
        .at("2026-09-01T09:00:00Z", not_brought());
    let evaluation = eval(&at_the_edge, "2026-09-01T10:00:00Z");
    let inform = action(&evaluation, "inform_childrens_services");
    assert_eq!(inform.trigger.to_string(), id(2));
    assert_eq!(inform.due.to_string(), "2026-09-02T16:00:00Z");
    let past_the_edge = episode("child_not_brought")
        .at("2026-03-02T10:00:00Z", not_brought())
        .at("2026-09-01T09:00:01Z", not_brought());
    let evaluation = eval(&past_the_edge, "2026-09-01T10:00:00Z");
    assert!(evaluation.actions.iter().all(|a| a.code.as_str() != "inform_childrens_services"));
}
