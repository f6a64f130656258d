//! 5.2: in receipt of services with risks or children. T0 = a missed appointment,
//! Monday 2 March 10:00; the patient is disengaged once a phone call has failed and a
//! letter has gone.

use episode::pathway::{State, WarningCode};
use expect_test::expect;
use serde_json::json;

use crate::support::*;

const T0: &str = "2026-03-02T10:00:00Z";

fn disengaged_on_monday(ep: Ep) -> Ep {
    ep.at(T0, missed_follow_up())
        .at("2026-03-02T11:00:00Z", phone("patient", "no_answer"))
        .at("2026-03-02T15:00:00Z", letter("letter", "patient", "request_contact"))
}

#[test]
fn at_t0_phone_the_same_day_then_write() {
    let ep = episode("in_service").fact("risk", json!("high")).at(T0, missed_follow_up());
    check(
        &ep,
        "2026-03-02T10:30:00Z",
        expect![[r#"
        phone_patient                     open      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.2; high; from e1]
    "#]],
    );
    let ep = ep.at("2026-03-02T11:00:00Z", phone("patient", "no_answer"));
    check(
        &ep,
        "2026-03-02T11:30:00Z",
        expect![[r#"
        phone_patient                     done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.2; high; from e1] by e2
        write_to_patient                  open      2026-03-02T11:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e2]
    "#]],
    );
}

#[test]
fn disengaged_opens_the_next_working_day_actions_and_an_upcoming_escalation() {
    let ep = disengaged_on_monday(episode("in_service").fact("risk", json!("high")));
    check(
        &ep,
        "2026-03-02T16:00:00Z",
        expect![[r#"
        phone_patient                     done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.2; high; from e1] by e2
        write_to_patient                  done      2026-03-02T11:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e2] by e3
        contact_family_carers             open      2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        contact_electronically            open      2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        contact_other_providers           open      2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        unannounced_home_visit            open      2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        consider_mha_assessment           upcoming  2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2, 5.4; high; from e3]
        escalate_to_team_manager          upcoming  2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3]
        consider_police_support           upcoming  2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3]
        consider_intensive_support        upcoming  2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3]
    "#]],
    );
}

#[test]
fn the_visit_going_overdue_escalates_the_same_day() {
    let ep = disengaged_on_monday(episode("in_service").fact("risk", json!("high")));
    check(
        &ep,
        "2026-03-03T18:00:00Z",
        expect![[r#"
        phone_patient                     done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.2; high; from e1] by e2
        write_to_patient                  done      2026-03-02T11:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e2] by e3
        contact_family_carers             overdue   2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        contact_electronically            overdue   2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        contact_other_providers           overdue   2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        unannounced_home_visit            overdue   2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        consider_mha_assessment           open      2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2, 5.4; high; from e3]
        escalate_to_team_manager          open      2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3]
        consider_police_support           open      2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3]
        consider_intensive_support        open      2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3]
    "#]],
    );
}

#[test]
fn an_unanswered_visit_escalates_then_the_mdt_follows_the_escalation() {
    let ep = disengaged_on_monday(episode("in_service").fact("risk", json!("high")))
        .at("2026-03-03T09:30:00Z", visit(false, "no_answer"))
        .at("2026-03-03T09:35:00Z", card(4))
        .at("2026-03-03T10:00:00Z", told("team_manager", "meeting"))
        .at("2026-03-03T10:30:00Z", decided("police_support", "no"))
        .at("2026-03-03T10:31:00Z", decided("intensive_support", "yes"))
        .at("2026-03-03T10:32:00Z", decided("mha_assessment", "no"));
    check(
        &ep,
        "2026-03-03T11:00:00Z",
        expect![[r#"
        phone_patient                     done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.2; high; from e1] by e2
        leave_calling_card                done      2026-03-03T09:30:00Z -> 2026-03-03T10:30:00Z  visitor  [5.1.1, a; high; from e4] by e5
        write_to_patient                  done      2026-03-02T11:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e2] by e3
        contact_family_carers             open      2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        contact_electronically            open      2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        contact_other_providers           open      2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        unannounced_home_visit            done      2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3] by e4
        consider_mha_assessment           done      2026-03-03T09:30:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2, 5.4; high; from e3] by e9
        escalate_to_team_manager          done      2026-03-03T09:30:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3] by e6
        consider_police_support           done      2026-03-03T09:30:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3] by e7
        consider_intensive_support        done      2026-03-03T09:30:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3] by e8
        arrange_mdt                       open      2026-03-03T10:00:00Z -> 2026-03-04T17:00:00Z  team_manager  [5.6, 5.2; high; from e6]
    "#]],
    );
    // An MDT without the team manager does not count and is warned of; a quorate one does.
    let ep = ep.at("2026-03-04T10:00:00Z", mdt(&["senior_clinician", "care_coordinator"], "continue"));
    check(
        &ep,
        "2026-03-04T11:00:00Z",
        expect![[r#"
        phone_patient                     done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.2; high; from e1] by e2
        leave_calling_card                done      2026-03-03T09:30:00Z -> 2026-03-03T10:30:00Z  visitor  [5.1.1, a; high; from e4] by e5
        write_to_patient                  done      2026-03-02T11:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e2] by e3
        contact_family_carers             overdue   2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        contact_electronically            overdue   2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        contact_other_providers           overdue   2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        unannounced_home_visit            done      2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3] by e4
        consider_mha_assessment           done      2026-03-03T09:30:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2, 5.4; high; from e3] by e9
        escalate_to_team_manager          done      2026-03-03T09:30:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3] by e6
        consider_police_support           done      2026-03-03T09:30:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3] by e7
        consider_intensive_support        done      2026-03-03T09:30:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3] by e8
        arrange_mdt                       open      2026-03-03T10:00:00Z -> 2026-03-04T17:00:00Z  team_manager  [5.6, 5.2; high; from e6]
        share_mdt_plan                    open      2026-03-04T10:00:00Z -> 2026-03-06T17:00:00Z  care_coordinator  [5.6; routine; from e10]
        ! MdtQuorum e10
    "#]],
    );
    let ep = ep.at("2026-03-04T15:00:00Z", mdt(&["senior_clinician", "team_manager"], "continue"));
    let evaluation = eval(&ep, "2026-03-04T16:00:00Z");
    let arrange = action(&evaluation, "arrange_mdt");
    assert_eq!(arrange.state, State::Done);
    assert_eq!(arrange.resolved_by.map(|u| u.to_string()), Some(id(11)));
}

#[test]
fn with_children_the_parenting_impact_the_referrer_and_childrens_services() {
    let ep = disengaged_on_monday(episode("in_service").fact("children", json!(true)))
        .at("2026-03-03T09:30:00Z", visit(false, "access_refused"))
        .at("2026-03-03T11:00:00Z", decided("childrens_services_known", "not_applicable"))
        .at("2026-03-03T11:10:00Z", told("referrer", "phone"));
    check(
        &ep,
        "2026-03-03T12:00:00Z",
        expect![[r#"
        phone_patient                     done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.2; high; from e1] by e2
        write_to_patient                  done      2026-03-02T11:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e2] by e3
        contact_family_carers             open      2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        contact_electronically            open      2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        contact_other_providers           open      2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        unannounced_home_visit            done      2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3] by e4
        assess_parenting_impact           open      2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3]
        consider_mha_assessment           open      2026-03-03T09:30:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2, 5.4; high; from e3]
        escalate_to_team_manager          open      2026-03-03T09:30:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3]
        consider_police_support           open      2026-03-03T09:30:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3]
        consider_intensive_support        open      2026-03-03T09:30:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3]
        notify_referrer                   done      2026-03-03T09:30:00Z -> 2026-03-04T17:00:00Z  care_coordinator  [5.2; high; from e3] by e6
        confirm_to_referrer_in_writing    open      2026-03-03T09:30:00Z -> 2026-03-04T17:00:00Z  care_coordinator  [5.2; high; from e3]
        inform_childrens_services         done      2026-03-03T09:30:00Z -> 2026-03-04T17:00:00Z  care_coordinator  [5.2; high; from e3] by e5
    "#]],
    );
}

#[test]
fn childrens_services_known_also_needs_a_partner_told() {
    let ep = disengaged_on_monday(episode("in_service").fact("children", json!(true)))
        .at("2026-03-03T09:30:00Z", visit(false, "no_answer"))
        .at("2026-03-03T11:00:00Z", decided("childrens_services_known", "yes"));
    let evaluation = eval(&ep, "2026-03-03T12:00:00Z");
    assert_eq!(action(&evaluation, "inform_childrens_services").state, State::Open);
    let ep = ep.at("2026-03-03T11:30:00Z", told("health_visitor", "phone"));
    let evaluation = eval(&ep, "2026-03-03T12:00:00Z");
    let inform = action(&evaluation, "inform_childrens_services");
    assert_eq!(inform.state, State::Done);
    assert_eq!(inform.resolved_by.map(|u| u.to_string()), Some(id(6)));
}

#[test]
fn the_first_contact_after_t_calls_for_a_full_assessment_within_seven_days() {
    let ep =
        disengaged_on_monday(episode("in_service").fact("risk", json!("high"))).at("2026-03-04T10:00:00Z", reengaged());
    check(
        &ep,
        "2026-03-04T12:00:00Z",
        expect![[r#"
        phone_patient                     done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.2; high; from e1] by e2
        write_to_patient                  done      2026-03-02T11:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e2] by e3
        contact_family_carers             cancelled 2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3] was_overdue
        contact_electronically            cancelled 2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3] was_overdue
        contact_other_providers           cancelled 2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3] was_overdue
        unannounced_home_visit            cancelled 2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3] was_overdue
        consider_mha_assessment           cancelled 2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2, 5.4; high; from e3] was_overdue
        escalate_to_team_manager          cancelled 2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3] was_overdue
        consider_police_support           cancelled 2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3] was_overdue
        consider_intensive_support        cancelled 2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3] was_overdue
        full_assessment                   open      2026-03-04T10:00:00Z -> 2026-03-11T10:00:00Z  care_coordinator  [5.2; routine; from e4]
    "#]],
    );
    let ep = ep.at("2026-03-12T10:00:00Z", assessed());
    let evaluation = eval(&ep, "2026-03-12T12:00:00Z");
    let assessment = action(&evaluation, "full_assessment");
    assert_eq!(assessment.resolved_by.map(|u| u.to_string()), Some(id(5)));
    assert!(assessment.late);
}

#[test]
fn a_full_transfer_to_assertive_outreach_before_reengagement_is_warned_of() {
    let ep = disengaged_on_monday(episode("in_service").fact("risk", json!("high")))
        .at("2026-03-03T10:00:00Z", referral("assertive_outreach", true))
        .at("2026-03-03T10:05:00Z", referral("assertive_outreach", false));
    let evaluation = eval(&ep, "2026-03-03T12:00:00Z");
    let warnings: Vec<_> = evaluation.warnings.iter().map(|w| (w.code, w.record.clone())).collect();
    assert_eq!(warnings, vec![(WarningCode::TransferBeforeReengagement, Some(id(4)))]);
    // Support (no transfer) also counts as considering intensive support.
    assert!(action(&evaluation, "consider_intensive_support").resolved_by.is_some());
}

#[test]
fn one_working_day_across_a_bank_holiday_monday() {
    // Friday 1 May 2026 (BST); Monday 4 May is the early May bank holiday.
    let ep = episode("in_service")
        .fact("risk", json!("high"))
        .opened("2026-04-30T08:00:00Z")
        .at("2026-05-01T08:00:00Z", missed_follow_up())
        .at("2026-05-01T09:00:00Z", phone("patient", "no_answer"));
    let evaluation = eval(&ep, "2026-05-01T10:00:00Z");
    assert_eq!(action(&evaluation, "write_to_patient").due.to_string(), "2026-05-05T16:00:00Z");
}

#[test]
fn a_reengaged_patient_discharged_before_the_full_assessment_still_owes_it() {
    let ep = disengaged_on_monday(episode("in_service").fact("risk", json!("high")))
        .at("2026-03-04T10:00:00Z", reengaged())
        .at("2026-03-05T10:00:00Z", discharged(true));
    check(
        &ep,
        "2026-03-05T12:00:00Z",
        expect![[r#"
        phone_patient                     done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.2; high; from e1] by e2
        write_to_patient                  done      2026-03-02T11:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e2] by e3
        contact_family_carers             cancelled 2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3] was_overdue
        contact_electronically            cancelled 2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3] was_overdue
        contact_other_providers           cancelled 2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3] was_overdue
        unannounced_home_visit            cancelled 2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3] was_overdue
        consider_mha_assessment           cancelled 2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2, 5.4; high; from e3] was_overdue
        escalate_to_team_manager          cancelled 2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3] was_overdue
        consider_police_support           cancelled 2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3] was_overdue
        consider_intensive_support        cancelled 2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3] was_overdue
        full_assessment                   open      2026-03-04T10:00:00Z -> 2026-03-11T10:00:00Z  care_coordinator  [5.2; routine; from e4]
        ! DischargeWithoutMdt e5
        ! DischargeWithOpenActions e5: full_assessment
    "#]],
    );
}

#[test]
fn children_learnt_after_contact_still_call_for_the_parenting_impact() {
    // Re-engaged on Wednesday; on Thursday the team learns of children. The impact on
    // parenting survives contact: due 1 working day from Thursday's record. The rows
    // raised with the escalation do not survive contact, so they stay cancelled.
    let ep = disengaged_on_monday(episode("in_service").fact("risk", json!("high")).fact("children", json!(true)))
        .at("2026-03-04T10:00:00Z", reengaged())
        .at("2026-03-05T10:00:00Z", fact_changed("children", json!(true)));
    check(
        &ep,
        "2026-03-05T12:00:00Z",
        expect![[r#"
        phone_patient                     done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.2; high; from e1] by e2
        write_to_patient                  done      2026-03-02T11:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e2] by e3
        contact_family_carers             cancelled 2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3] was_overdue
        contact_electronically            cancelled 2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3] was_overdue
        contact_other_providers           cancelled 2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3] was_overdue
        unannounced_home_visit            cancelled 2026-03-02T15:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.2; high; from e3] was_overdue
        consider_mha_assessment           cancelled 2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2, 5.4; high; from e3] was_overdue
        escalate_to_team_manager          cancelled 2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3] was_overdue
        consider_police_support           cancelled 2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3] was_overdue
        consider_intensive_support        cancelled 2026-03-03T17:00:00Z -> 2026-03-03T23:59:59Z  care_coordinator  [5.2; high; from e3] was_overdue
        notify_referrer                   cancelled 2026-03-05T10:00:00Z -> 2026-03-06T17:00:00Z  care_coordinator  [5.2; high; from e5]
        confirm_to_referrer_in_writing    cancelled 2026-03-05T10:00:00Z -> 2026-03-06T17:00:00Z  care_coordinator  [5.2; high; from e5]
        assess_parenting_impact           open      2026-03-05T10:00:00Z -> 2026-03-06T17:00:00Z  care_coordinator  [5.2; high; from e5]
        inform_childrens_services         cancelled 2026-03-05T10:00:00Z -> 2026-03-06T17:00:00Z  care_coordinator  [5.2; high; from e5]
        full_assessment                   open      2026-03-04T10:00:00Z -> 2026-03-11T10:00:00Z  care_coordinator  [5.2; routine; from e4]
    "#]],
    );
}
