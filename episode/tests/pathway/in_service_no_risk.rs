//! 5.3: in receipt of services, no identified risk; T = the second consecutive miss.

use episode::pathway::State;
use expect_test::expect;
use serde_json::json;

use crate::support::*;

#[test]
fn one_miss_is_not_enough_and_a_contact_between_resets() {
    let ep = episode("in_service")
        .at("2026-03-02T10:00:00Z", missed_follow_up())
        .at("2026-03-03T10:00:00Z", attended())
        .at("2026-03-09T10:00:00Z", missed_follow_up());
    check(&ep, "2026-03-09T12:00:00Z", expect![[""]]);
}

#[test]
fn the_second_consecutive_miss_the_family_the_warning_letter_and_the_mdt() {
    let ep = episode("in_service")
        .at("2026-03-02T10:00:00Z", missed_follow_up())
        .at("2026-03-09T10:00:00Z", missed_follow_up())
        .at("2026-03-10T10:00:00Z", phone("patient", "no_answer"))
        .at("2026-03-11T10:00:00Z", phone("family_carer", "no_answer"))
        .at("2026-03-12T10:00:00Z", letter("letter", "patient", "discharge_warning"));
    check(
        &ep,
        "2026-03-12T12:00:00Z",
        expect![[r#"
        contact_patient                   done      2026-03-09T10:00:00Z -> 2026-03-11T17:00:00Z  care_coordinator  [5.3; routine; from e2] by e3
        contact_family_carers             done      2026-03-10T10:00:00Z -> 2026-03-12T17:00:00Z  care_coordinator  [5.3; routine; from e3] by e4
        send_discharge_warning_letter     done      2026-03-11T10:00:00Z -> 2026-03-13T17:00:00Z  care_coordinator  [5.3; routine; from e4] by e5
        consider_mha_assessment           upcoming  2026-04-02T09:00:00Z -> 2026-04-02T22:59:59Z  care_coordinator  [5.3, 5.4; high; from e5]
        arrange_mdt                       upcoming  2026-04-02T09:00:00Z -> 2026-04-13T16:00:00Z  team_manager  [5.3, 5.6; high; from e5]
    "#]],
    );
    // Warning letter + 21 days is Thursday 2 April 10:00 (BST by then: 09:00Z).
    check(
        &ep,
        "2026-04-02T12:00:00Z",
        expect![[r#"
        contact_patient                   done      2026-03-09T10:00:00Z -> 2026-03-11T17:00:00Z  care_coordinator  [5.3; routine; from e2] by e3
        contact_family_carers             done      2026-03-10T10:00:00Z -> 2026-03-12T17:00:00Z  care_coordinator  [5.3; routine; from e3] by e4
        send_discharge_warning_letter     done      2026-03-11T10:00:00Z -> 2026-03-13T17:00:00Z  care_coordinator  [5.3; routine; from e4] by e5
        consider_mha_assessment           open      2026-04-02T09:00:00Z -> 2026-04-02T22:59:59Z  care_coordinator  [5.3, 5.4; high; from e5]
        arrange_mdt                       open      2026-04-02T09:00:00Z -> 2026-04-13T16:00:00Z  team_manager  [5.3, 5.6; high; from e5]
    "#]],
    );
}

#[test]
fn contact_before_the_three_weeks_are_up_cancels_the_mdt() {
    let ep = episode("in_service")
        .at("2026-03-02T10:00:00Z", missed_follow_up())
        .at("2026-03-09T10:00:00Z", missed_follow_up())
        .at("2026-03-11T10:00:00Z", phone("family_carer", "no_answer"))
        .at("2026-03-12T10:00:00Z", letter("letter", "patient", "discharge_warning"))
        .at("2026-03-20T10:00:00Z", phone("patient", "contact_made"));
    let evaluation = eval(&ep, "2026-04-03T12:00:00Z");
    assert_eq!(action(&evaluation, "arrange_mdt").state, State::Cancelled);
}

#[test]
fn a_known_disengager_gets_an_mdt_instead_of_the_warning_letter() {
    let ep = episode("in_service")
        .fact("known_disengager", json!(true))
        .at("2026-03-02T10:00:00Z", missed_follow_up())
        .at("2026-03-09T10:00:00Z", missed_follow_up())
        .at("2026-03-11T10:00:00Z", phone("family_carer", "no_answer"));
    check(
        &ep,
        "2026-03-11T12:00:00Z",
        expect![[r#"
        contact_patient                   open      2026-03-09T10:00:00Z -> 2026-03-11T17:00:00Z  care_coordinator  [5.3; routine; from e2]
        consider_mha_assessment           open      2026-03-11T10:00:00Z -> 2026-03-11T23:59:59Z  care_coordinator  [5.3, 5.4; high; from e3]
        plan_for_disengagement            open      2026-03-02T08:00:00Z -> 2026-03-16T17:00:00Z  care_coordinator  [5.7; routine; from opening]
        arrange_mdt                       open      2026-03-11T10:00:00Z -> 2026-03-18T17:00:00Z  team_manager  [5.7, 5.6; high; from e3]
    "#]],
    );
}

#[test]
fn contact_with_deterioration_steps_up() {
    let ep = episode("in_service")
        .at("2026-03-02T10:00:00Z", missed_follow_up())
        .at("2026-03-09T10:00:00Z", missed_follow_up())
        .at("2026-03-10T10:00:00Z", reached("suspected", false));
    check(
        &ep,
        "2026-03-10T12:00:00Z",
        expect![[r#"
        offer_appointment                 open      2026-03-10T10:00:00Z -> 2026-03-10T23:59:59Z  care_coordinator  [5.3; high; from e3]
        contact_patient                   done      2026-03-09T10:00:00Z -> 2026-03-11T17:00:00Z  care_coordinator  [5.3; routine; from e2] by e3
        step_up                           open      2026-03-10T10:00:00Z -> 2026-03-11T17:00:00Z  care_coordinator  [5.3; high; from e3]
    "#]],
    );
}

#[test]
fn a_well_patient_who_wishes_it_is_discharged_under_cpa_without_an_mdt_warning() {
    let ep = episode("in_service")
        .at("2026-03-02T10:00:00Z", missed_follow_up())
        .at("2026-03-09T10:00:00Z", missed_follow_up())
        .at("2026-03-10T10:00:00Z", reached("none", true))
        .at("2026-03-13T10:00:00Z", discharged(true));
    check(
        &ep,
        "2026-03-13T12:00:00Z",
        expect![[r#"
        offer_appointment                 cancelled 2026-03-10T10:00:00Z -> 2026-03-10T23:59:59Z  care_coordinator  [5.3; high; from e3] was_overdue
        contact_patient                   done      2026-03-09T10:00:00Z -> 2026-03-11T17:00:00Z  care_coordinator  [5.3; routine; from e2] by e3
        discharge_per_cpa                 done      2026-03-10T10:00:00Z -> 2026-03-24T17:00:00Z  care_coordinator  [5.3; routine; from e3] by e4
    "#]],
    );
}

#[test]
fn a_deteriorating_patient_discharged_the_next_day_still_owes_the_step_up() {
    // Reached on Tuesday and found deteriorating; discharged on Wednesday. The step up
    // stays owed (the hazard, not a reason to forget it); only the appointment offer is
    // cancelled; the discharge is warned of.
    let ep = episode("in_service")
        .at("2026-03-02T10:00:00Z", missed_follow_up())
        .at("2026-03-09T10:00:00Z", missed_follow_up())
        .at("2026-03-10T10:00:00Z", reached("suspected", false))
        .at("2026-03-11T10:00:00Z", discharged(true));
    check(
        &ep,
        "2026-03-11T12:00:00Z",
        expect![[r#"
        offer_appointment                 cancelled 2026-03-10T10:00:00Z -> 2026-03-10T23:59:59Z  care_coordinator  [5.3; high; from e3] was_overdue
        contact_patient                   done      2026-03-09T10:00:00Z -> 2026-03-11T17:00:00Z  care_coordinator  [5.3; routine; from e2] by e3
        step_up                           open      2026-03-10T10:00:00Z -> 2026-03-11T17:00:00Z  care_coordinator  [5.3; high; from e3]
        ! DischargeWithoutMdt e4
        ! DischargeWithOpenActions e4: step_up
    "#]],
    );
    check(
        &ep,
        "2026-03-12T09:00:00Z",
        expect![[r#"
        offer_appointment                 cancelled 2026-03-10T10:00:00Z -> 2026-03-10T23:59:59Z  care_coordinator  [5.3; high; from e3] was_overdue
        contact_patient                   done      2026-03-09T10:00:00Z -> 2026-03-11T17:00:00Z  care_coordinator  [5.3; routine; from e2] by e3
        step_up                           overdue   2026-03-10T10:00:00Z -> 2026-03-11T17:00:00Z  care_coordinator  [5.3; high; from e3]
        ! DischargeWithoutMdt e4
        ! DischargeWithOpenActions e4: step_up
    "#]],
    );
}

#[test]
fn known_disengager_learnt_after_contact_calls_for_the_mdt_from_then() {
    // The family was tried (the warning letter row), the patient reached, and only then
    // recorded as known to disengage and re-engage (5.7): the MDT survives contact and
    // is due 5 working days from the record; the letter is cancelled by the contact.
    let ep = episode("in_service")
        .at("2026-03-02T10:00:00Z", missed_follow_up())
        .at("2026-03-09T10:00:00Z", missed_follow_up())
        .at("2026-03-10T10:00:00Z", phone("family_carer", "no_answer"))
        .at("2026-03-11T10:00:00Z", reached("none", false))
        .at("2026-03-12T10:00:00Z", fact_changed("known_disengager", json!(true)))
        .fact("known_disengager", json!(true));
    check(
        &ep,
        "2026-03-12T12:00:00Z",
        expect![[r#"
        contact_patient                   done      2026-03-09T10:00:00Z -> 2026-03-11T17:00:00Z  care_coordinator  [5.3; routine; from e2] by e4
        offer_appointment                 overdue   2026-03-11T10:00:00Z -> 2026-03-11T23:59:59Z  care_coordinator  [5.3; high; from e4]
        consider_mha_assessment           cancelled 2026-03-12T10:00:00Z -> 2026-03-12T23:59:59Z  care_coordinator  [5.3, 5.4; high; from e5]
        arrange_mdt                       open      2026-03-12T10:00:00Z -> 2026-03-19T17:00:00Z  team_manager  [5.7, 5.6; high; from e5]
        plan_for_disengagement            open      2026-03-12T10:00:00Z -> 2026-03-26T17:00:00Z  care_coordinator  [5.7; routine; from e5]
    "#]],
    );
}
