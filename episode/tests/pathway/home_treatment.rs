//! Appendix A: home treatment, high risk. T = a visit without contact or a failed call.

use expect_test::expect;

use crate::support::*;

#[test]
fn a_visit_without_contact_starts_the_four_hour_clock_in_office_hours() {
    let ep = episode("home_treatment").at("2026-03-02T10:00:00Z", visit(false, "no_answer"));
    check(
        &ep,
        "2026-03-02T10:10:00Z",
        expect![[r#"
        leave_calling_card                open      2026-03-02T10:00:00Z -> 2026-03-02T11:00:00Z  visitor  [5.1.1, a; high; from e1]
        phone_patient                     open      2026-03-02T10:00:00Z -> 2026-03-02T11:00:00Z  care_coordinator  [a; urgent; from e1]
        unannounced_home_visit            open      2026-03-02T10:00:00Z -> 2026-03-02T12:00:00Z  care_coordinator  [a; urgent; from e1]
        escalate_to_team_manager          open      2026-03-02T10:00:00Z -> 2026-03-02T14:00:00Z  team_manager  [a; urgent; from e1]
        consider_police_support           open      2026-03-02T10:00:00Z -> 2026-03-02T14:00:00Z  care_coordinator  [a; urgent; from e1]
        consider_mha_assessment           open      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [a, 5.4; high; from e1]
    "#]],
    );
}

#[test]
fn out_of_hours_the_on_call_manager_owns_the_escalation() {
    // 14:30 + 4 h = 18:30, after 17:00.
    let ep = episode("home_treatment").at("2026-03-02T14:30:00Z", phone("patient", "no_answer"));
    let evaluation = eval(&ep, "2026-03-02T15:00:00Z");
    assert_eq!(action(&evaluation, "escalate_to_team_manager").owner.to_string(), "on_call_manager");
    assert_eq!(action(&evaluation, "escalate_to_team_manager").due.to_string(), "2026-03-02T18:30:00Z");
    // On a Saturday morning too.
    let ep = episode("home_treatment").at("2026-03-07T09:00:00Z", phone("patient", "no_answer"));
    let evaluation = eval(&ep, "2026-03-07T09:30:00Z");
    assert_eq!(action(&evaluation, "escalate_to_team_manager").owner.to_string(), "on_call_manager");
}

#[test]
fn the_escalation_done_calls_for_an_mdt_within_a_working_day() {
    let ep = episode("home_treatment")
        .at("2026-03-02T10:00:00Z", phone("patient", "no_answer"))
        .at("2026-03-02T10:50:00Z", phone("named_contact", "no_answer"))
        .at("2026-03-02T11:30:00Z", visit(false, "not_at_address"))
        .at("2026-03-02T13:00:00Z", told("on_call_manager", "phone"));
    check(
        &ep,
        "2026-03-02T15:00:00Z",
        expect![[r#"
        phone_patient                     done      2026-03-02T10:00:00Z -> 2026-03-02T11:00:00Z  care_coordinator  [a; urgent; from e1] by e2
        unannounced_home_visit            done      2026-03-02T10:00:00Z -> 2026-03-02T12:00:00Z  care_coordinator  [a; urgent; from e1] by e3
        leave_calling_card                overdue   2026-03-02T11:30:00Z -> 2026-03-02T12:30:00Z  visitor  [5.1.1, a; high; from e3]
        escalate_to_team_manager          done      2026-03-02T10:00:00Z -> 2026-03-02T14:00:00Z  team_manager  [a; urgent; from e1] by e4
        consider_police_support           overdue   2026-03-02T10:00:00Z -> 2026-03-02T14:00:00Z  care_coordinator  [a; urgent; from e1]
        consider_mha_assessment           open      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [a, 5.4; high; from e1]
        arrange_mdt                       open      2026-03-02T13:00:00Z -> 2026-03-03T17:00:00Z  team_manager  [5.6, a; high; from e4]
    "#]],
    );
}

#[test]
fn contact_cancels_all_four() {
    let ep = episode("home_treatment")
        .at("2026-03-02T10:00:00Z", visit(true, "no_answer"))
        .at("2026-03-02T10:30:00Z", phone("patient", "contact_made"));
    check(
        &ep,
        "2026-03-02T15:00:00Z",
        expect![[r#"
        phone_patient                     done      2026-03-02T10:00:00Z -> 2026-03-02T11:00:00Z  care_coordinator  [a; urgent; from e1] by e2
        unannounced_home_visit            cancelled 2026-03-02T10:00:00Z -> 2026-03-02T12:00:00Z  care_coordinator  [a; urgent; from e1]
        escalate_to_team_manager          cancelled 2026-03-02T10:00:00Z -> 2026-03-02T14:00:00Z  team_manager  [a; urgent; from e1]
        consider_police_support           cancelled 2026-03-02T10:00:00Z -> 2026-03-02T14:00:00Z  care_coordinator  [a; urgent; from e1]
        consider_mha_assessment           cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [a, 5.4; high; from e1]
    "#]],
    );
}

#[test]
fn one_escalation_answering_two_cycles_raises_one_mdt() {
    // Found by the property tests: records at one instant, where the escalation (e1)
    // answers the four-hour row of the cycle before the appointment (e2's call) and of
    // the one after it (e4's call). The MDT it calls for is one action, with one id.
    let t = "2026-03-02T08:00:00Z";
    let ep = episode("home_treatment")
        .at(t, told("team_manager", "phone"))
        .at(t, phone("patient", "no_answer"))
        .at(t, attended())
        .at(t, phone("patient", "wrong_number"));
    let evaluation = eval(&ep, t);
    let mdts: Vec<_> = evaluation.actions.iter().filter(|a| a.code.as_str() == "arrange_mdt").collect();
    assert_eq!(mdts.len(), 1, "{mdts:?}");
    assert_eq!(mdts[0].trigger.to_string(), id(1));
    let mut ids: Vec<_> = evaluation.actions.iter().map(|a| a.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), evaluation.actions.len(), "every action has its own id");
}

#[test]
fn the_mdt_is_due_in_one_working_day_whatever_risk_says() {
    // Appendix A is the high-risk pathway: `risk: low` does not give the 5 days.
    let ep = episode("home_treatment")
        .fact("risk", serde_json::json!("low"))
        .at("2026-03-06T15:00:00Z", phone("patient", "no_answer"))
        .at("2026-03-06T16:00:00Z", told("team_manager", "phone"));
    let evaluation = eval(&ep, "2026-03-06T16:30:00Z");
    let mdt = action(&evaluation, "arrange_mdt");
    // Friday 16:00 + 1 working day: Monday 9 March, 17:00.
    assert_eq!(mdt.active_from.to_string(), "2026-03-06T16:00:00Z");
    assert_eq!(mdt.due.to_string(), "2026-03-09T17:00:00Z");
}

#[test]
fn a_discharge_leaves_the_four_hour_rows_owed() {
    let ep = episode("home_treatment")
        .at("2026-03-02T10:00:00Z", visit(false, "no_answer"))
        .at("2026-03-02T10:20:00Z", discharged(true));
    check(
        &ep,
        "2026-03-02T10:30:00Z",
        expect![[r#"
        leave_calling_card                open      2026-03-02T10:00:00Z -> 2026-03-02T11:00:00Z  visitor  [5.1.1, a; high; from e1]
        phone_patient                     open      2026-03-02T10:00:00Z -> 2026-03-02T11:00:00Z  care_coordinator  [a; urgent; from e1]
        unannounced_home_visit            open      2026-03-02T10:00:00Z -> 2026-03-02T12:00:00Z  care_coordinator  [a; urgent; from e1]
        escalate_to_team_manager          open      2026-03-02T10:00:00Z -> 2026-03-02T14:00:00Z  team_manager  [a; urgent; from e1]
        consider_police_support           open      2026-03-02T10:00:00Z -> 2026-03-02T14:00:00Z  care_coordinator  [a; urgent; from e1]
        consider_mha_assessment           open      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [a, 5.4; high; from e1]
        ! DischargeWithoutMdt e2
        ! DischargeWithOpenActions e2: consider_mha_assessment, consider_police_support, escalate_to_team_manager, leave_calling_card, phone_patient, unannounced_home_visit
    "#]],
    );
}
