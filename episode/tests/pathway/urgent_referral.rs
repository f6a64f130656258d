//! 5.1.1: urgent and emergency referral. T = initial appointment missed, Monday 10:00.

use episode::pathway::State;
use expect_test::expect;
use serde_json::json;

use crate::support::*;

const T: &str = "2026-03-02T10:00:00Z";

#[test]
fn at_t_contact_today_and_the_24_hour_notifications_are_upcoming() {
    let ep = episode("urgent_referral").at(T, missed_initial());
    check(
        &ep,
        "2026-03-02T12:00:00Z",
        expect![[r#"
        contact_patient                   open      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        contact_family_carers             open      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        consider_cold_call                open      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        notify_referrer                   upcoming  2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_gp                         upcoming  2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_other_agencies             upcoming  2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        agree_joint_plan                  upcoming  2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        consider_mha_assessment           upcoming  2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1, 5.4; high; from e1]
    "#]],
    );
}

#[test]
fn attempts_visits_and_cards_do_the_same_day_actions() {
    let ep = episode("urgent_referral")
        .at(T, missed_initial())
        .at("2026-03-02T10:30:00Z", phone("patient", "no_answer"))
        .at("2026-03-02T11:00:00Z", phone("family_carer", "message_left"))
        .at("2026-03-02T14:00:00Z", visit(false, "no_answer"))
        .at("2026-03-02T14:05:00Z", card(4));
    check(
        &ep,
        "2026-03-02T15:00:00Z",
        expect![[r#"
        leave_calling_card                done      2026-03-02T14:00:00Z -> 2026-03-02T15:00:00Z  visitor  [5.1.1, a; high; from e4] by e5
        contact_patient                   done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1] by e2
        contact_family_carers             done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1] by e3
        consider_cold_call                done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1] by e4
        notify_referrer                   upcoming  2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_gp                         upcoming  2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_other_agencies             upcoming  2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        agree_joint_plan                  upcoming  2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        consider_mha_assessment           upcoming  2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1, 5.4; high; from e1]
    "#]],
    );
}

#[test]
fn no_contact_by_t_plus_24_hours_opens_the_notifications_then_they_go_overdue() {
    let ep = episode("urgent_referral").at(T, missed_initial()).at("2026-03-03T11:00:00Z", told("gp", "phone"));
    check(
        &ep,
        "2026-03-03T12:00:00Z",
        expect![[r#"
        contact_patient                   overdue   2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        contact_family_carers             overdue   2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        consider_cold_call                overdue   2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        notify_referrer                   open      2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_gp                         done      2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1] by e2
        notify_other_agencies             open      2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        agree_joint_plan                  open      2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        consider_mha_assessment           open      2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1, 5.4; high; from e1]
    "#]],
    );
    check(
        &ep,
        "2026-03-04T09:00:00Z",
        expect![[r#"
        contact_patient                   overdue   2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        contact_family_carers             overdue   2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        consider_cold_call                overdue   2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        notify_referrer                   overdue   2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_gp                         done      2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1] by e2
        notify_other_agencies             overdue   2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        agree_joint_plan                  overdue   2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        consider_mha_assessment           overdue   2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1, 5.4; high; from e1]
    "#]],
    );
}

#[test]
fn contact_cancels_and_offers_an_appointment_the_same_day() {
    let ep = episode("urgent_referral")
        .at(T, missed_initial())
        .at("2026-03-02T15:00:00Z", phone("patient", "contact_made"))
        .at("2026-03-02T15:10:00Z", booked("2026-03-05T10:00:00Z"));
    check(
        &ep,
        "2026-03-03T12:00:00Z",
        expect![[r#"
        contact_patient                   done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1] by e2
        contact_family_carers             cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        consider_cold_call                cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        offer_appointment                 done      2026-03-02T15:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; high; from e2] by e3
        notify_referrer                   cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_gp                         cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_other_agencies             cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        agree_joint_plan                  cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        consider_mha_assessment           cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1, 5.4; high; from e1]
    "#]],
    );
}

#[test]
fn immediate_risk_informs_the_police_at_once_and_survives_contact() {
    let ep = episode("urgent_referral")
        .fact("immediate_risk", json!(true))
        .at(T, missed_initial())
        .at("2026-03-02T11:00:00Z", phone("patient", "contact_made"));
    check(
        &ep,
        "2026-03-02T12:00:00Z",
        expect![[r#"
        inform_police                     overdue   2026-03-02T10:00:00Z -> 2026-03-02T10:00:00Z  assessor  [5.1.1; urgent; from e1]
        contact_patient                   done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1] by e2
        contact_family_carers             cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        consider_cold_call                cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        offer_appointment                 open      2026-03-02T11:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; high; from e2]
        notify_referrer                   cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_gp                         cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_other_agencies             cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        agree_joint_plan                  cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        consider_mha_assessment           cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1, 5.4; high; from e1]
    "#]],
    );
    let ep = ep.at("2026-03-02T11:30:00Z", told("police", "phone"));
    check(
        &ep,
        "2026-03-02T12:00:00Z",
        expect![[r#"
        inform_police                     done      2026-03-02T10:00:00Z -> 2026-03-02T10:00:00Z  assessor  [5.1.1; urgent; from e1] by e3 late was_overdue
        contact_patient                   done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1] by e2
        contact_family_carers             cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        consider_cold_call                cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        offer_appointment                 open      2026-03-02T11:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; high; from e2]
        notify_referrer                   cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_gp                         cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_other_agencies             cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        agree_joint_plan                  cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        consider_mha_assessment           cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1, 5.4; high; from e1]
    "#]],
    );
}

#[test]
fn immediate_risk_recorded_after_t_counts_from_when_it_became_true() {
    let ep = episode("urgent_referral")
        .fact("immediate_risk", json!(true))
        .at(T, missed_initial())
        .at("2026-03-02T13:00:00Z", fact_changed("immediate_risk", json!(true)));
    let evaluation = eval(&ep, "2026-03-02T13:30:00Z");
    let police = action(&evaluation, "inform_police");
    assert_eq!(police.active_from.to_string(), "2026-03-02T13:00:00Z");
    assert_eq!(police.due.to_string(), "2026-03-02T13:00:00Z");
    assert_eq!(police.trigger.to_string(), id(2));
    assert_eq!(police.state, State::Overdue);
}

#[test]
fn a_referrer_concern_for_children_survives_contact_and_merges_the_notifications() {
    let ep = episode("urgent_referral")
        .fact("referrer_child_concern", json!(true))
        .at(T, missed_initial())
        .at("2026-03-02T11:00:00Z", told("safeguarding_children_team", "phone"))
        .at("2026-03-02T16:00:00Z", phone("patient", "contact_made"));
    check(
        &ep,
        "2026-03-03T09:00:00Z",
        expect![[r#"
        contact_patient                   done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1] by e3
        contact_family_carers             cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        consider_cold_call                cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        notify_referrer                   overdue   2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.1.1; high; from e1]
        safeguarding_children_discussion  overdue   2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.1.1; high; from e1]
        confirm_to_referrer_in_writing    overdue   2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.1.1; high; from e1]
        offer_appointment                 overdue   2026-03-02T16:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; high; from e3]
        notify_gp                         cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_other_agencies             cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        agree_joint_plan                  cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        consider_mha_assessment           cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1, 5.4; high; from e1]
    "#]],
    );
}

#[test]
fn a_routine_referral_with_high_risk_follows_the_urgent_rules() {
    let ep = episode("routine_referral").fact("risk", json!("high")).at(T, missed_initial());
    let evaluation = eval(&ep, "2026-03-02T12:00:00Z");
    assert_eq!(action(&evaluation, "contact_patient").cites, "5.1.1");
    assert!(evaluation.actions.iter().all(|a| a.code.as_str() != "phone_patient"));
}

#[test]
fn a_follow_up_miss_is_not_the_trigger() {
    let ep = episode("urgent_referral").at(T, missed_follow_up());
    check(&ep, "2026-03-02T12:00:00Z", expect![[""]]);
}

#[test]
fn same_day_on_the_day_the_clocks_go_forward() {
    // Sunday 29 March 2026: 00:30 GMT, then BST from 01:00 GMT; 23:59:59 BST is 22:59:59Z.
    let ep = episode("urgent_referral").opened("2026-03-28T08:00:00Z").at("2026-03-29T00:30:00Z", missed_initial());
    let evaluation = eval(&ep, "2026-03-29T01:00:00Z");
    assert_eq!(action(&evaluation, "contact_patient").due.to_string(), "2026-03-29T22:59:59Z");
    // T + 24 h is elapsed time (01:30 BST on the 30th), and "same day" as it is BST.
    assert_eq!(action(&evaluation, "notify_gp").active_from.to_string(), "2026-03-30T00:30:00Z");
    assert_eq!(action(&evaluation, "notify_gp").due.to_string(), "2026-03-30T22:59:59Z");
}

#[test]
fn same_day_on_the_day_the_clocks_go_back() {
    // Sunday 25 October 2026: 00:30 BST is 23:30Z on the 24th; the local date is the 25th,
    // whose 23:59:59 is GMT.
    let ep = episode("urgent_referral").opened("2026-10-24T08:00:00Z").at("2026-10-24T23:30:00Z", missed_initial());
    let evaluation = eval(&ep, "2026-10-25T01:00:00Z");
    assert_eq!(action(&evaluation, "contact_patient").due.to_string(), "2026-10-25T23:59:59Z");
}

#[test]
fn recall_is_considered_with_the_24_hour_notifications_under_a_cto() {
    let ep = episode("urgent_referral").fact("legal_status", json!("cto")).at(T, missed_initial());
    let evaluation = eval(&ep, "2026-03-03T11:00:00Z");
    let recall = action(&evaluation, "consider_recall");
    assert_eq!(recall.active_from.to_string(), "2026-03-03T10:00:00Z");
    assert_eq!(recall.due.to_string(), "2026-03-03T23:59:59Z");
    assert_eq!(recall.owner.to_string(), "responsible_clinician");
}

#[test]
fn immediate_risk_learnt_after_contact_still_informs_the_police_from_then() {
    // The patient answers at 11:00; the risk to life is learnt at 13:00. Contact does not
    // mean the team already knows: the police are due at 13:00.
    let ep = episode("urgent_referral")
        .fact("immediate_risk", json!(true))
        .at(T, missed_initial())
        .at("2026-03-02T11:00:00Z", phone("patient", "contact_made"))
        .at("2026-03-02T11:05:00Z", booked("2026-03-04T10:00:00Z"))
        .at("2026-03-02T13:00:00Z", fact_changed("immediate_risk", json!(true)));
    check(
        &ep,
        "2026-03-02T13:00:00Z",
        expect![[r#"
        inform_police                     open      2026-03-02T13:00:00Z -> 2026-03-02T13:00:00Z  assessor  [5.1.1; urgent; from e4]
        contact_patient                   done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1] by e2
        contact_family_carers             cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        consider_cold_call                cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        offer_appointment                 done      2026-03-02T11:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; high; from e2] by e3
        notify_referrer                   cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_gp                         cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_other_agencies             cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        agree_joint_plan                  cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        consider_mha_assessment           cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1, 5.4; high; from e1]
    "#]],
    );
    let ep = ep.at("2026-03-02T13:10:00Z", told("police", "phone"));
    check(
        &ep,
        "2026-03-02T14:00:00Z",
        expect![[r#"
        inform_police                     done      2026-03-02T13:00:00Z -> 2026-03-02T13:00:00Z  assessor  [5.1.1; urgent; from e4] by e5 late was_overdue
        contact_patient                   done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1] by e2
        contact_family_carers             cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        consider_cold_call                cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        offer_appointment                 done      2026-03-02T11:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; high; from e2] by e3
        notify_referrer                   cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_gp                         cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_other_agencies             cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        agree_joint_plan                  cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        consider_mha_assessment           cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1, 5.4; high; from e1]
    "#]],
    );
}

#[test]
fn a_referrer_concern_for_children_learnt_after_contact_raises_its_rows_from_then() {
    let ep = episode("urgent_referral")
        .fact("referrer_child_concern", json!(true))
        .at(T, missed_initial())
        .at("2026-03-02T11:00:00Z", phone("patient", "contact_made"))
        .at("2026-03-02T14:00:00Z", fact_changed("referrer_child_concern", json!(true)));
    check(
        &ep,
        "2026-03-02T15:00:00Z",
        expect![[r#"
        contact_patient                   done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1] by e2
        contact_family_carers             cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        consider_cold_call                cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        offer_appointment                 open      2026-03-02T11:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; high; from e2]
        notify_referrer                   open      2026-03-02T14:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.1.1; high; from e1]
        safeguarding_children_discussion  open      2026-03-02T14:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.1.1; high; from e3]
        confirm_to_referrer_in_writing    open      2026-03-02T14:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.1.1; high; from e3]
        notify_gp                         cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_other_agencies             cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        agree_joint_plan                  cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        consider_mha_assessment           cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1, 5.4; high; from e1]
    "#]],
    );
    // On a routine referral the concern makes it urgent (5.1.2 applies only without
    // significant risks): the same rows, from the same moment.
    let routine = episode("routine_referral")
        .fact("referrer_child_concern", json!(true))
        .at(T, missed_initial())
        .at("2026-03-02T11:00:00Z", phone("patient", "contact_made"))
        .at("2026-03-02T14:00:00Z", fact_changed("referrer_child_concern", json!(true)));
    let evaluation = eval(&routine, "2026-03-02T15:00:00Z");
    let discussion = action(&evaluation, "safeguarding_children_discussion");
    assert_eq!(discussion.active_from.to_string(), "2026-03-02T14:00:00Z");
    assert_eq!(discussion.due.to_string(), "2026-03-02T23:59:59Z");
    assert_eq!(discussion.trigger.to_string(), id(3));
}

#[test]
fn a_cto_learnt_after_contact_raises_recall_only_if_its_moment_came() {
    // No contact by T + 24 h: the notifications and the MHA assessment came (Tuesday
    // 10:00); the patient is reached at 12:00; the CTO is recorded at 15:00. Recall
    // survives contact: it is due the same day, from 15:00.
    let ep = episode("urgent_referral")
        .fact("legal_status", json!("cto"))
        .at(T, missed_initial())
        .at("2026-03-03T12:00:00Z", phone("patient", "contact_made"))
        .at("2026-03-03T15:00:00Z", fact_changed("legal_status", json!("cto")));
    check(
        &ep,
        "2026-03-03T16:00:00Z",
        expect![[r#"
        contact_patient                   done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1] by e2 late was_overdue
        contact_family_carers             cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1] was_overdue
        consider_cold_call                cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1] was_overdue
        notify_referrer                   cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_gp                         cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_other_agencies             cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        agree_joint_plan                  cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        consider_mha_assessment           cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1, 5.4; high; from e1]
        offer_appointment                 open      2026-03-03T12:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e2]
        consider_recall                   open      2026-03-03T15:00:00Z -> 2026-03-03T23:59:59Z  responsible_clinician  [5.4; high; from e3]
    "#]],
    );
    // Reached at 11:00 on Monday, before T + 24 h: the moment recall comes with never
    // came, so a CTO learnt afterwards leaves nothing owed (the row never started).
    let early = episode("urgent_referral")
        .fact("legal_status", json!("cto"))
        .at(T, missed_initial())
        .at("2026-03-02T11:00:00Z", phone("patient", "contact_made"))
        .at("2026-03-03T15:00:00Z", fact_changed("legal_status", json!("cto")));
    let evaluation = eval(&early, "2026-03-03T16:00:00Z");
    assert_eq!(action(&evaluation, "consider_recall").state, State::Cancelled);
}

#[test]
fn a_discharge_without_contact_leaves_the_cycle_owed_until_the_patient_is_reached() {
    // Discharged at 12:00 on Monday without contact or an MDT: nothing the missed
    // appointment called for is forgotten, and the 24-hour rows still come.
    let ep = episode("urgent_referral").at(T, missed_initial()).at("2026-03-02T12:00:00Z", discharged(true));
    check(
        &ep,
        "2026-03-03T12:00:00Z",
        expect![[r#"
        contact_patient                   overdue   2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        contact_family_carers             overdue   2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        consider_cold_call                overdue   2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        notify_referrer                   open      2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_gp                         open      2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_other_agencies             open      2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        agree_joint_plan                  open      2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        consider_mha_assessment           open      2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1, 5.4; high; from e1]
        ! DischargeWithoutMdt e2
        ! DischargeWithOpenActions e2: agree_joint_plan, consider_cold_call, consider_mha_assessment, contact_family_carers, contact_patient, notify_gp, notify_other_agencies, notify_referrer
    "#]],
    );
    // The patient phones back on Wednesday: contact cancels what is still owed.
    let ep = ep.at("2026-03-04T09:00:00Z", phone("patient", "contact_made"));
    check(
        &ep,
        "2026-03-04T10:00:00Z",
        expect![[r#"
        contact_patient                   done      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1] by e3 late was_overdue
        contact_family_carers             cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1] was_overdue
        consider_cold_call                cancelled 2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1] was_overdue
        notify_referrer                   cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1] was_overdue
        notify_gp                         cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1] was_overdue
        notify_other_agencies             cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1] was_overdue
        agree_joint_plan                  cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1] was_overdue
        consider_mha_assessment           cancelled 2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1, 5.4; high; from e1] was_overdue
        ! DischargeWithoutMdt e2
    "#]],
    );
}
