//! 5.1.2: routine referral. T = initial appointment missed, Monday 2 March 10:00.

use episode::pathway::State;
use expect_test::expect;

use crate::support::*;

const T: &str = "2026-03-02T10:00:00Z";

#[test]
fn at_t_phone_within_two_working_days() {
    let ep = episode("routine_referral").at(T, missed_initial());
    check(
        &ep,
        "2026-03-02T12:00:00Z",
        expect![[r#"
        phone_patient                     open      2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  assessor  [5.1.2; routine; from e1]
    "#]],
    );
}

#[test]
fn a_failed_call_calls_for_a_first_class_letter_and_the_letter_starts_seven_days() {
    let ep = episode("routine_referral")
        .at(T, missed_initial())
        .at("2026-03-03T10:00:00Z", phone("patient", "no_answer"))
        .at("2026-03-04T09:00:00Z", letter("letter_first_class", "patient", "request_contact"));
    check(
        &ep,
        "2026-03-04T12:00:00Z",
        expect![[r#"
        phone_patient                     done      2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  assessor  [5.1.2; routine; from e1] by e2
        write_to_patient                  done      2026-03-03T10:00:00Z -> 2026-03-04T17:00:00Z  assessor  [5.1.2; routine; from e2] by e3
        notify_referrer                   upcoming  2026-03-11T09:00:00Z -> 2026-03-12T17:00:00Z  assessor  [5.1.2; routine; from e3]
        notify_gp                         upcoming  2026-03-11T09:00:00Z -> 2026-03-12T17:00:00Z  assessor  [5.1.2; routine; from e3]
        notify_other_agencies             upcoming  2026-03-11T09:00:00Z -> 2026-03-12T17:00:00Z  assessor  [5.1.2; routine; from e3]
        agree_joint_plan                  upcoming  2026-03-11T09:00:00Z -> 2026-03-12T17:00:00Z  assessor  [5.1.2; routine; from e3]
        consider_onward_referral          upcoming  2026-03-11T09:00:00Z -> 2026-03-12T17:00:00Z  assessor  [5.1.2; routine; from e3]
    "#]],
    );
    // No contact by the letter + 7 days (Wednesday 11 March 09:00): tell everyone by
    // the next working day's 17:00.
    check(
        &ep,
        "2026-03-11T12:00:00Z",
        expect![[r#"
        phone_patient                     done      2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  assessor  [5.1.2; routine; from e1] by e2
        write_to_patient                  done      2026-03-03T10:00:00Z -> 2026-03-04T17:00:00Z  assessor  [5.1.2; routine; from e2] by e3
        notify_referrer                   open      2026-03-11T09:00:00Z -> 2026-03-12T17:00:00Z  assessor  [5.1.2; routine; from e3]
        notify_gp                         open      2026-03-11T09:00:00Z -> 2026-03-12T17:00:00Z  assessor  [5.1.2; routine; from e3]
        notify_other_agencies             open      2026-03-11T09:00:00Z -> 2026-03-12T17:00:00Z  assessor  [5.1.2; routine; from e3]
        agree_joint_plan                  open      2026-03-11T09:00:00Z -> 2026-03-12T17:00:00Z  assessor  [5.1.2; routine; from e3]
        consider_onward_referral          open      2026-03-11T09:00:00Z -> 2026-03-12T17:00:00Z  assessor  [5.1.2; routine; from e3]
    "#]],
    );
}

#[test]
fn a_second_class_letter_does_not_do_the_first_class_letter() {
    let ep = episode("routine_referral")
        .at(T, missed_initial())
        .at("2026-03-03T10:00:00Z", phone("patient", "wrong_number"))
        .at("2026-03-03T11:00:00Z", letter("letter", "patient", "request_contact"));
    let evaluation = eval(&ep, "2026-03-04T12:00:00Z");
    let write = action(&evaluation, "write_to_patient");
    assert_eq!(write.state, State::Open);
    assert_eq!(write.due.to_string(), "2026-03-04T17:00:00Z");
}

#[test]
fn two_working_days_across_christmas() {
    // Thursday 24 December 2026: Friday 25th and Monday 28th are bank holidays.
    let ep = episode("routine_referral").opened("2026-12-01T09:00:00Z").at("2026-12-24T11:00:00Z", missed_initial());
    let evaluation = eval(&ep, "2026-12-24T12:00:00Z");
    assert_eq!(action(&evaluation, "phone_patient").due.to_string(), "2026-12-30T17:00:00Z");
}

#[test]
fn contact_cancels_and_offers_an_appointment() {
    let ep = episode("routine_referral")
        .at(T, missed_initial())
        .at("2026-03-03T10:00:00Z", phone("patient", "no_answer"))
        .at("2026-03-03T16:00:00Z", attended());
    check(
        &ep,
        "2026-03-04T12:00:00Z",
        expect![[r#"
        offer_appointment                 overdue   2026-03-03T16:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.2; high; from e3]
        phone_patient                     done      2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  assessor  [5.1.2; routine; from e1] by e2
        write_to_patient                  cancelled 2026-03-03T10:00:00Z -> 2026-03-04T17:00:00Z  assessor  [5.1.2; routine; from e2]
    "#]],
    );
}
