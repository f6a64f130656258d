//! Across pathways (5.4 to 5.7, filing) and every warning.

use episode::Strictness;
use episode::pathway::{State, WarningCode};
use expect_test::expect;
use serde_json::json;

use crate::support::*;

#[test]
fn a_child_safeguarding_concern_is_discussed_the_same_day() {
    let ep = episode("in_service").fact("safeguarding", json!("child"));
    check(
        &ep,
        "2026-03-02T09:00:00Z",
        expect![[r#"
        discuss_safeguarding              open      2026-03-02T08:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.5; high; from opening]
    "#]],
    );
    let ep = episode("in_service")
        .fact("safeguarding", json!("adult"))
        .at("2026-03-04T10:00:00Z", fact_changed("safeguarding", json!("adult")))
        .at("2026-03-04T11:00:00Z", told("safeguarding_nurse", "phone"))
        .at("2026-03-05T09:00:00Z", told("team_manager", "meeting"));
    check(
        &ep,
        "2026-03-05T12:00:00Z",
        expect![[r#"
        discuss_safeguarding              done      2026-03-04T10:00:00Z -> 2026-03-05T17:00:00Z  care_coordinator  [5.5; high; from e1] by e3
    "#]],
    );
}

#[test]
fn a_known_disengager_needs_a_plan_within_ten_working_days() {
    let ep = episode("in_service").fact("known_disengager", json!(true));
    check(
        &ep,
        "2026-03-02T09:00:00Z",
        expect![[r#"
        plan_for_disengagement            open      2026-03-02T08:00:00Z -> 2026-03-16T17:00:00Z  care_coordinator  [5.7; routine; from opening]
    "#]],
    );
}

#[test]
fn each_record_is_filed_within_a_working_day() {
    let ep = episode("in_service")
        .at("2026-03-02T10:00:00Z", phone("patient", "no_answer"))
        .at("2026-03-02T11:00:00Z", visit(true, "seen"))
        .at("2026-03-03T09:00:00Z", filed(&[1]));
    check_all(
        &ep,
        "2026-03-04T09:00:00Z",
        expect![[r#"
        file_to_epr                       done      2026-03-02T10:00:00Z -> 2026-03-03T17:00:00Z  team_base  [5; routine; from e1] by e3
        file_to_epr                       overdue   2026-03-02T11:00:00Z -> 2026-03-03T17:00:00Z  team_base  [5; routine; from e2]
    "#]],
    );
}

#[test]
fn a_record_entered_in_error_is_not_filed_unless_it_was_filed_already() {
    let unfiled = episode("in_service")
        .at("2026-03-02T10:00:00Z", phone("patient", "no_answer"))
        .at("2026-03-02T10:05:00Z", entered_in_error(1));
    check_all(&unfiled, "2026-03-02T12:00:00Z", expect![[""]]);
    let filed_first = episode("in_service")
        .at("2026-03-02T10:00:00Z", phone("patient", "no_answer"))
        .at("2026-03-02T10:01:00Z", filed(&[1]))
        .at("2026-03-02T10:05:00Z", entered_in_error(1));
    check_all(
        &filed_first,
        "2026-03-02T12:00:00Z",
        expect![[r#"
        file_to_epr                       open      2026-03-02T10:05:00Z -> 2026-03-03T17:00:00Z  team_base  [5; routine; from e3]
    "#]],
    );
}

#[test]
fn an_mdt_deciding_discharge_tells_the_gp_and_sends_the_crisis_plan() {
    let ep = episode("in_service")
        .at("2026-03-02T10:00:00Z", mdt(&["senior_clinician", "team_manager"], "discharge"))
        .at("2026-03-03T10:00:00Z", told("gp", "writing"))
        .at("2026-03-03T10:10:00Z", discharged(false));
    check(
        &ep,
        "2026-03-03T12:00:00Z",
        expect![[r#"
        share_mdt_plan                    open      2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  care_coordinator  [5.6; routine; from e1]
        inform_gp_of_discharge            done      2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  care_coordinator  [5.6; routine; from e1] by e2
        send_discharge_letter             open      2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  care_coordinator  [5.6; routine; from e1]
        ! DischargeWithOpenActions e3: send_discharge_letter, share_mdt_plan
        ! DischargeWithoutCrisisPlan e3
    "#]],
    );
}

#[test]
fn a_discharge_without_an_mdt_is_warned_of() {
    let ep = episode("in_service").at("2026-03-02T10:00:00Z", discharged(true));
    check(
        &ep,
        "2026-03-02T12:00:00Z",
        expect![[r#"
        ! DischargeWithoutMdt e1
    "#]],
    );
}

#[test]
fn a_record_timed_after_the_server_received_it_is_clock_skew() {
    let mut json = episode("in_service")
        .at("2026-03-02T10:06:00Z", phone("patient", "no_answer"))
        .at("2026-03-02T10:04:00Z", attended())
        .json()
        .clone();
    json["events"][0]["received_at"] = json!("2026-03-02T10:00:00Z");
    json["events"][1]["received_at"] = json!("2026-03-02T10:00:00Z");
    let episode = episode::Episode::from_value(&json, Strictness::Strict).unwrap();
    let evaluation = episode::pathway::evaluate(
        &episode,
        "2026-03-02T12:00:00Z".parse().unwrap(),
        &episode::pathway::Calendar::england_and_wales(),
    );
    let skewed: Vec<_> =
        evaluation.warnings.iter().filter(|w| w.code == WarningCode::ClockSkew).map(|w| w.record.clone()).collect();
    assert_eq!(skewed, vec![Some(id(1))]);
}

#[test]
fn conflicting_facts_resolve_to_the_safer_side_and_are_warned_of() {
    // low/high: the high-risk in-service rules (5.2: phone the same day).
    let ep = episode("in_service").fact("risk", json!(["low", "high"])).at("2026-03-02T10:00:00Z", missed_follow_up());
    check(
        &ep,
        "2026-03-02T12:00:00Z",
        expect![[r#"
        phone_patient                     open      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  care_coordinator  [5.2; high; from e1]
        ! FactConflict risk
    "#]],
    );
    // routine/home treatment: Appendix A.
    let ep = episode(r#"x"#)
        .fact("pathway", json!(["routine_referral", "home_treatment"]))
        .at("2026-03-02T10:00:00Z", visit(false, "no_answer"));
    let evaluation = eval(&ep, "2026-03-02T10:30:00Z");
    assert_eq!(action(&evaluation, "escalate_to_team_manager").cites, "A");
    // adult/child safeguarding: both, discussed the same day.
    let ep = episode("in_service").fact("safeguarding", json!(["adult", "child"]));
    let evaluation = eval(&ep, "2026-03-02T09:00:00Z");
    assert_eq!(action(&evaluation, "discuss_safeguarding").due.to_string(), "2026-03-02T23:59:59Z");
}

#[test]
fn a_conflict_with_child_not_brought_evaluates_both_pathways() {
    let ep = episode("x")
        .fact("pathway", json!(["child_not_brought", "urgent_referral"]))
        .at("2026-03-02T10:00:00Z", missed_initial());
    check(
        &ep,
        "2026-03-02T12:00:00Z",
        expect![[r#"
        contact_patient                   open      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        contact_family_carers             open      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        consider_cold_call                open      2026-03-02T10:00:00Z -> 2026-03-02T23:59:59Z  assessor  [5.1.1; urgent; from e1]
        consider_impact_on_child          open      2026-03-02T10:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [wnb; high; from e1]
        notify_referrer                   upcoming  2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_gp                         upcoming  2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        notify_other_agencies             upcoming  2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        agree_joint_plan                  upcoming  2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1; high; from e1]
        consider_mha_assessment           upcoming  2026-03-03T10:00:00Z -> 2026-03-03T23:59:59Z  assessor  [5.1.1, 5.4; high; from e1]
        send_was_not_brought_letter       open      2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  care_coordinator  [wnb; routine; from e1]
        ! FactConflict pathway
    "#]],
    );
}

#[test]
fn an_invalid_stored_record_is_left_out_and_reported() {
    let mut json = episode("urgent_referral")
        .at("2026-03-02T10:00:00Z", missed_initial())
        .at("2026-03-02T10:30:00Z", phone("patient", "no_answer"))
        .json()
        .clone();
    json["events"][1]["outcome"] = json!("maybe");
    let episode = episode::Episode::from_value(&json, Strictness::Lenient).unwrap();
    let evaluation = episode::pathway::evaluate(
        &episode,
        "2026-03-02T12:00:00Z".parse().unwrap(),
        &episode::pathway::Calendar::england_and_wales(),
    );
    let contact = evaluation.actions.iter().find(|a| a.code.as_str() == "contact_patient").unwrap();
    assert_eq!(contact.state, State::Open);
    let invalid: Vec<_> = evaluation.warnings.iter().filter(|w| w.code == WarningCode::InvalidRecord).collect();
    assert_eq!(invalid.len(), 1);
    assert_eq!(invalid[0].record.as_deref(), Some(id(2).as_str()));
    assert!(invalid[0].message.contains("outcome"), "{}", invalid[0].message);
}

#[test]
fn only_a_quorate_mdt_decides_a_discharge() {
    // An MDT without the team manager decides discharge: it is no decision (5.6).
    let ep = episode("in_service")
        .at("2026-03-02T10:00:00Z", mdt(&["senior_clinician", "care_coordinator"], "discharge"))
        .at("2026-03-02T11:00:00Z", told("gp", "writing"))
        .at("2026-03-02T11:05:00Z", told("other_agency", "writing"))
        .at("2026-03-02T11:10:00Z", told("family_carer", "phone"))
        .at("2026-03-03T10:00:00Z", discharged(true));
    check(
        &ep,
        "2026-03-03T12:00:00Z",
        expect![[r#"
        share_mdt_plan                    done      2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  care_coordinator  [5.6; routine; from e1] by e4
        inform_gp_of_discharge            done      2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  care_coordinator  [5.6; routine; from e1] by e2
        send_discharge_letter             done      2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  care_coordinator  [5.6; routine; from e1] by e5
        ! DischargeWithoutMdt e5
        ! MdtQuorum e1
    "#]],
    );
    let ep = episode("in_service")
        .at("2026-03-02T10:00:00Z", mdt(&["senior_clinician", "team_manager"], "discharge"))
        .at("2026-03-02T11:00:00Z", told("gp", "writing"))
        .at("2026-03-02T11:05:00Z", told("other_agency", "writing"))
        .at("2026-03-02T11:10:00Z", told("family_carer", "phone"))
        .at("2026-03-03T10:00:00Z", discharged(true));
    check(
        &ep,
        "2026-03-03T12:00:00Z",
        expect![[r#"
        share_mdt_plan                    done      2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  care_coordinator  [5.6; routine; from e1] by e4
        inform_gp_of_discharge            done      2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  care_coordinator  [5.6; routine; from e1] by e2
        send_discharge_letter             done      2026-03-02T10:00:00Z -> 2026-03-04T17:00:00Z  care_coordinator  [5.6; routine; from e1] by e5
    "#]],
    );
}

#[test]
fn a_child_added_to_an_adult_safeguarding_concern_is_discussed_again_the_same_day() {
    // An adult concern set on Monday 09:00 (1 working day) and discussed that morning; a
    // child added on Wednesday 10:00 raises its own discussion, due that day. Neither
    // discussion is lost by the other.
    let ep = episode("in_service")
        .fact("safeguarding", json!("both"))
        .at("2026-03-02T09:00:00Z", fact_changed("safeguarding", json!("adult")))
        .at("2026-03-02T11:00:00Z", told("safeguarding_nurse", "phone"))
        .at("2026-03-02T11:30:00Z", told("team_manager", "meeting"))
        .at("2026-03-04T10:00:00Z", fact_changed("safeguarding", json!("both")));
    check(
        &ep,
        "2026-03-04T12:00:00Z",
        expect![[r#"
        discuss_safeguarding              done      2026-03-02T09:00:00Z -> 2026-03-03T17:00:00Z  care_coordinator  [5.5; high; from e1] by e3
        discuss_safeguarding              open      2026-03-04T10:00:00Z -> 2026-03-04T23:59:59Z  care_coordinator  [5.5; high; from e4]
    "#]],
    );
}

#[test]
fn an_episode_without_a_pathway_is_refused_not_defaulted() {
    let mut json = episode("urgent_referral").at("2026-03-02T10:00:00Z", missed_initial()).json().clone();
    json.as_object_mut().expect("an object").remove("pathway");
    for strictness in [Strictness::Strict, Strictness::Lenient] {
        let error = episode::Episode::from_value(&json, strictness).expect_err("a pathway is required");
        assert!(error.to_string().contains("pathway"), "{error}");
    }
}
