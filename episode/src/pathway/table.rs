//! The rule table: every row of `pathway.md` as the code applies it, with the local
//! defaults in force, for `tether pathway rules` and the clinical safety officer.

use std::fmt::Write;

use super::{Code, Defaults};

/// How long a row's action has.
#[derive(Clone, Copy, Debug)]
pub enum Due {
    /// Fixed by the policy.
    Fixed(&'static str),
    /// A local default (†), by its name in [`Defaults`].
    Local(&'static str),
    /// One of two local defaults, by the condition in the text.
    LocalEither(&'static str, &'static str, &'static str),
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub code: Code,
    pub pathway: &'static str,
    pub when: &'static str,
    pub due: Due,
    pub done_by: &'static str,
    pub owner: &'static str,
    pub cites: &'static str,
}

const fn row(
    code: Code,
    pathway: &'static str,
    when: &'static str,
    due: Due,
    done_by: &'static str,
    owner: &'static str,
    cites: &'static str,
) -> Row {
    Row { code, pathway, when, due, done_by, owner, cites }
}

use Code::*;
use Due::*;

/// Every row, in the order of `pathway.md`.
pub const ROWS: &[Row] = &[
    // 5.1.1
    row(
        ContactPatient,
        "urgent_referral",
        "T: initial appointment missed",
        Fixed("same day"),
        "any contact_attempt to patient",
        "assessor",
        "5.1.1",
    ),
    row(
        ContactFamilyCarers,
        "urgent_referral",
        "T",
        Local("urgent_contact_family_carers"),
        "contact_attempt to family_carer/named_contact/associate, or decision family_contact",
        "assessor",
        "5.1.1",
    ),
    row(
        ConsiderColdCall,
        "urgent_referral",
        "T",
        Local("urgent_consider_cold_call"),
        "unannounced home_visit, or decision cold_call",
        "assessor",
        "5.1.1",
    ),
    row(
        InformPolice,
        "urgent_referral",
        "immediate_risk, from T or when it became true; survives contact",
        Fixed("immediately"),
        "communication to police",
        "assessor",
        "5.1.1",
    ),
    row(
        OfferAppointment,
        "urgent_referral, routine_referral, in_service (5.3)",
        "first contact after T; survives contact",
        Local("offer_appointment"),
        "appointment_booked, or decision alternative_appointment",
        "assessor / care_coordinator",
        "5.1.1, 5.1.2, 5.3",
    ),
    row(
        NotifyReferrer,
        "urgent_referral",
        "no contact by T + 24 h (upcoming from T)",
        Local("urgent_notifications_after_24_hours"),
        "communication to referrer",
        "assessor",
        "5.1.1",
    ),
    row(
        NotifyGp,
        "urgent_referral",
        "no contact by T + 24 h",
        Local("urgent_notifications_after_24_hours"),
        "communication to gp",
        "assessor",
        "5.1.1",
    ),
    row(
        NotifyOtherAgencies,
        "urgent_referral",
        "no contact by T + 24 h",
        Local("urgent_notifications_after_24_hours"),
        "communication to other_agency, or decision other_agencies",
        "assessor",
        "5.1.1",
    ),
    row(
        AgreeJointPlan,
        "urgent_referral",
        "no contact by T + 24 h",
        Local("urgent_notifications_after_24_hours"),
        "decision joint_plan",
        "assessor",
        "5.1.1",
    ),
    row(
        SafeguardingChildrenDiscussion,
        "urgent_referral",
        "referrer_child_concern, from T or when it became true; survives contact",
        Local("urgent_safeguarding_children_discussion"),
        "communications to safeguarding_children_team AND to team_manager/line_manager/safeguarding_supervisor",
        "care_coordinator",
        "5.1.1",
    ),
    row(
        NotifyReferrer,
        "urgent_referral",
        "referrer_child_concern; survives contact",
        Local("urgent_notify_referrer_of_child_concern"),
        "communication to referrer",
        "care_coordinator",
        "5.1.1",
    ),
    row(
        ConfirmToReferrerInWriting,
        "urgent_referral",
        "referrer_child_concern; survives contact",
        Local("urgent_notify_referrer_of_child_concern"),
        "communication to referrer, channel writing",
        "care_coordinator",
        "5.1.1",
    ),
    // 5.1.2
    row(
        PhonePatient,
        "routine_referral",
        "T: initial appointment missed",
        Local("routine_phone_patient"),
        "contact_attempt phone to patient",
        "assessor",
        "5.1.2",
    ),
    row(
        WriteToPatient,
        "routine_referral",
        "that phone attempt failed (from the call)",
        Local("routine_write_to_patient"),
        "contact_attempt letter_first_class to patient, letter request_contact",
        "assessor",
        "5.1.2",
    ),
    row(
        NotifyReferrer,
        "routine_referral",
        "no contact by first letter + 7 days (upcoming from the letter)",
        Local("routine_notifications_after_letter"),
        "communication to referrer",
        "assessor",
        "5.1.2",
    ),
    row(
        NotifyGp,
        "routine_referral",
        "no contact by letter + 7 days",
        Local("routine_notifications_after_letter"),
        "communication to gp",
        "assessor",
        "5.1.2",
    ),
    row(
        NotifyOtherAgencies,
        "routine_referral",
        "no contact by letter + 7 days",
        Local("routine_notifications_after_letter"),
        "communication to other_agency, or decision other_agencies",
        "assessor",
        "5.1.2",
    ),
    row(
        AgreeJointPlan,
        "routine_referral",
        "no contact by letter + 7 days",
        Local("routine_notifications_after_letter"),
        "decision joint_plan",
        "assessor",
        "5.1.2",
    ),
    row(
        ConsiderOnwardReferral,
        "routine_referral",
        "no contact by letter + 7 days",
        Local("routine_notifications_after_letter"),
        "decision onward_referral, or referral_made another_service",
        "assessor",
        "5.1.2",
    ),
    // 5.2
    row(
        PhonePatient,
        "in_service (5.2)",
        "T0: appointment missed",
        Local("risk_phone_patient"),
        "contact_attempt phone to patient",
        "care_coordinator",
        "5.2",
    ),
    row(
        WriteToPatient,
        "in_service (5.2)",
        "a phone call to the patient failed (from the call)",
        Local("risk_write_to_patient"),
        "any letter to patient",
        "care_coordinator",
        "5.2",
    ),
    row(
        ContactElectronically,
        "in_service (5.2)",
        "T: disengaged (failed call and letter after T0, no contact)",
        Local("risk_contact_electronically"),
        "contact_attempt sms/email to patient",
        "care_coordinator",
        "5.2",
    ),
    row(
        ContactFamilyCarers,
        "in_service (5.2)",
        "T",
        Local("risk_contact_family_carers"),
        "contact_attempt to family_carer/named_contact/associate, or decision family_contact",
        "care_coordinator",
        "5.2",
    ),
    row(
        ContactOtherProviders,
        "in_service (5.2)",
        "T",
        Local("risk_contact_other_providers"),
        "contact_attempt to other_provider, or decision other_providers",
        "care_coordinator",
        "5.2",
    ),
    row(
        UnannouncedHomeVisit,
        "in_service (5.2)",
        "T",
        Local("risk_unannounced_home_visit"),
        "unannounced home_visit after T",
        "care_coordinator",
        "5.2",
    ),
    row(
        EscalateToTeamManager,
        "in_service (5.2)",
        "first unannounced visit after T without contact, or unannounced_home_visit going overdue (upcoming until then)",
        Fixed("same day as that moment"),
        "communication to team_manager",
        "care_coordinator",
        "5.2",
    ),
    row(
        ConsiderPoliceSupport,
        "in_service (5.2)",
        "with the escalation",
        Local("risk_considerations_with_escalation"),
        "decision police_support",
        "care_coordinator",
        "5.2",
    ),
    row(
        ConsiderIntensiveSupport,
        "in_service (5.2)",
        "with the escalation",
        Local("risk_considerations_with_escalation"),
        "decision intensive_support, or referral_made home_treatment/assertive_outreach",
        "care_coordinator",
        "5.2",
    ),
    row(
        AssessParentingImpact,
        "in_service (5.2)",
        "children, at T; survives contact",
        Local("risk_assess_parenting_impact"),
        "communication to team_manager/line_manager/safeguarding_supervisor/safeguarding_children_team AND decision parenting_impact",
        "care_coordinator",
        "5.2",
    ),
    row(
        NotifyReferrer,
        "in_service (5.2)",
        "children, with the escalation",
        Local("risk_notify_referrer"),
        "communication to referrer, channel phone",
        "care_coordinator",
        "5.2",
    ),
    row(
        ConfirmToReferrerInWriting,
        "in_service (5.2)",
        "children, with the escalation",
        Local("risk_notify_referrer"),
        "communication to referrer, channel writing",
        "care_coordinator",
        "5.2",
    ),
    row(
        InformChildrensServices,
        "in_service (5.2)",
        "children, with the escalation",
        Local("risk_inform_childrens_services"),
        "decision childrens_services_known AND communication to health_visitor/school_nurse/gp/education/childrens_services (none needed if not_applicable)",
        "care_coordinator",
        "5.2",
    ),
    row(
        FullAssessment,
        "in_service (5.2)",
        "first contact after T; survives contact",
        Fixed("that contact + 7 days"),
        "assessment_completed",
        "care_coordinator",
        "5.2",
    ),
    // 5.3
    row(
        ContactPatient,
        "in_service (5.3)",
        "T: second consecutive appointment missed",
        Local("no_risk_contact_patient"),
        "any contact_attempt to patient",
        "care_coordinator",
        "5.3",
    ),
    row(
        ContactFamilyCarers,
        "in_service (5.3)",
        "that attempt failed (from the attempt)",
        Local("no_risk_contact_family_carers"),
        "contact_attempt to family_carer/named_contact/associate, or decision family_contact",
        "care_coordinator",
        "5.3",
    ),
    row(
        StepUp,
        "in_service (5.3)",
        "contact with deterioration suspected/confirmed; survives contact",
        Local("no_risk_step_up"),
        "referral_made community_treatment_team",
        "care_coordinator",
        "5.3",
    ),
    row(
        DischargePerCpa,
        "in_service (5.3)",
        "contact, deterioration none and wishes_discharge; survives contact",
        Local("no_risk_discharge_per_cpa"),
        "discharged",
        "care_coordinator",
        "5.3",
    ),
    row(
        SendDischargeWarningLetter,
        "in_service (5.3)",
        "a family contact attempt, patient not reached; not known_disengager",
        Local("no_risk_send_discharge_warning_letter"),
        "letter to patient, letter discharge_warning",
        "care_coordinator",
        "5.3",
    ),
    row(
        ArrangeMdt,
        "in_service (5.3)",
        "no contact by warning letter + 21 days (upcoming from the letter); with known_disengager, at the family attempt instead of the letter (5.7)",
        LocalEither("arrange_mdt", "arrange_mdt_high_risk", "if risk is high"),
        "mdt_meeting with senior_clinician and team_manager",
        "team_manager",
        "5.3, 5.6, 5.7",
    ),
    // A
    row(
        PhonePatient,
        "home_treatment",
        "T: visit without contact, or failed phone call to patient",
        Fixed("T + 1 hour"),
        "contact_attempt phone to patient/named_contact",
        "care_coordinator",
        "A",
    ),
    row(
        UnannouncedHomeVisit,
        "home_treatment",
        "T",
        Fixed("T + 2 hours"),
        "unannounced home_visit (then leave_calling_card)",
        "care_coordinator",
        "A",
    ),
    row(
        EscalateToTeamManager,
        "home_treatment",
        "T",
        Fixed("T + 4 hours"),
        "communication to team_manager/service_manager/on_call_manager",
        "team_manager; on_call_manager when due outside 09:00-17:00 on a working day",
        "A",
    ),
    row(
        ConsiderPoliceSupport,
        "home_treatment",
        "T",
        Fixed("T + 4 hours"),
        "decision police_support, or communication to police",
        "care_coordinator",
        "A",
    ),
    // WNB
    row(
        ConsiderImpactOnChild,
        "child_not_brought",
        "every miss; survives contact",
        Local("wnb_consider_impact_on_child"),
        "decision impact_on_child",
        "care_coordinator",
        "WNB",
    ),
    row(
        SendWasNotBroughtLetter,
        "child_not_brought",
        "every miss; survives contact",
        Local("wnb_send_was_not_brought_letter"),
        "letter to parent_carer, letter was_not_brought, after that miss",
        "care_coordinator",
        "WNB",
    ),
    row(
        InformChildrensServices,
        "child_not_brought",
        "each miss at which N >= wnb_inform_at_misses (N: misses in wnb_window_days), or childrens_services_involved",
        Local("wnb_inform_childrens_services"),
        "communication to childrens_services after that miss",
        "care_coordinator",
        "WNB",
    ),
    row(
        ReferToChildrensServices,
        "child_not_brought",
        "a miss at which N >= wnb_refer_at_misses, or one after a communication to childrens_services made after an earlier miss in the window; not while a referral in the window exists",
        Local("wnb_refer_to_childrens_services"),
        "referral_made childrens_services",
        "care_coordinator",
        "WNB",
    ),
    // Across
    row(
        LeaveCallingCard,
        "any",
        "each unannounced home_visit with no_answer/not_at_address; survives contact",
        Local("leave_calling_card"),
        "calling_card_left naming the visit",
        "visitor",
        "5.1.1, A",
    ),
    row(
        ArrangeMdt,
        "in_service (5.2), home_treatment",
        "escalate_to_team_manager done and still no contact; survives contact",
        LocalEither("arrange_mdt", "arrange_mdt_high_risk", "if risk is high or home treatment"),
        "mdt_meeting with senior_clinician and team_manager (else warning mdt_quorum)",
        "team_manager",
        "5.6",
    ),
    row(
        ShareMdtPlan,
        "any",
        "after each mdt_meeting; survives contact",
        Local("share_mdt_plan"),
        "communication to gp AND (other_agency or decision other_agencies) AND (family_carer or decision share_plan_with_family)",
        "care_coordinator",
        "5.6",
    ),
    row(
        InformGpOfDischarge,
        "any",
        "mdt_meeting with outcome discharge",
        Local("discharge_after_mdt"),
        "communication to gp",
        "care_coordinator",
        "5.6",
    ),
    row(
        SendDischargeLetter,
        "any",
        "mdt_meeting with outcome discharge",
        Local("discharge_after_mdt"),
        "discharged with crisis_plan_sent",
        "care_coordinator",
        "5.6",
    ),
    row(
        ConsiderMhaAssessment,
        "urgent_referral, in_service, home_treatment",
        "with escalate_to_team_manager (5.2, A), the 24-hour notifications (5.1.1), or arrange_mdt (5.3)",
        Local("consider_mha_assessment"),
        "decision mha_assessment",
        "assessor / care_coordinator",
        "5.4",
    ),
    row(
        ConsiderRecall,
        "any",
        "legal_status cto or conditional_discharge, with consider_mha_assessment (and at T in home treatment); survives contact",
        Local("consider_recall"),
        "decision recall",
        "responsible_clinician",
        "5.4",
    ),
    row(
        DiscussSafeguarding,
        "any",
        "safeguarding not none, from opening or when recorded; survives contact",
        LocalEither("discuss_safeguarding_child", "discuss_safeguarding_adult", "if it includes a child"),
        "communications to safeguarding_nurse AND team_manager",
        "care_coordinator",
        "5.5",
    ),
    row(
        PlanForDisengagement,
        "any",
        "known_disengager, at opening or when set; survives contact",
        Local("plan_for_disengagement"),
        "decision disengagement_plan",
        "care_coordinator",
        "5.7",
    ),
    row(
        FileToEpr,
        "any",
        "each record not yet in a filed_to_epr; survives contact",
        Local("file_to_epr"),
        "filed_to_epr listing it",
        "team_base",
        "5",
    ),
];

/// The table and the local defaults in force, as plain text.
pub fn render(defaults: &Defaults) -> String {
    let values = defaults.entries();
    let value =
        |name: &str| values.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_else(|| "?".into());
    let due = |due: Due| match due {
        Fixed(text) => text.to_string(),
        Local(name) => format!("{} † ({name})", value(name)),
        LocalEither(a, b, condition) => format!("{} †, {} † {condition} ({a}, {b})", value(a), value(b)),
    };
    let mut out = String::from("# Tether: the disengagement pathway's rules\n");
    for (i, r) in ROWS.iter().enumerate() {
        if i == 0 || section(ROWS[i - 1].cites) != section(r.cites) {
            let _ = writeln!(out, "\n## {}\n", section(r.cites));
            let _ = writeln!(out, "| code | pathway | when | due | done by | owner | cites |");
            let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.code,
            r.pathway,
            r.when,
            due(r.due),
            r.done_by,
            r.owner,
            r.cites
        );
    }
    let _ = writeln!(out, "\n## Local defaults (†)\n\n| name | value |\n|---|---|");
    for (name, value) in &values {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    let _ = writeln!(
        out,
        "\nTimes: same day = 23:59:59 Europe/London; N working days = 17:00 Europe/London on the Nth working day \
         after (Mon-Fri less England and Wales bank holidays); N days keeps the local clock time; N hours is elapsed time. \
         Reported in UTC."
    );
    out
}

fn section(cites: &str) -> &'static str {
    match cites.split(',').next().unwrap_or("").trim() {
        "5.1.1" => "Urgent and emergency referral (5.1.1)",
        "5.1.2" => "Routine referral (5.1.2)",
        "5.2" => "In receipt of services, risks identified or children (5.2)",
        "5.3" => "In receipt of services, no identified risk (5.3)",
        "A" => "Home treatment, high risk (Appendix A)",
        "WNB" => "Child not brought (WNB)",
        _ => "Across pathways",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_row_and_every_default_is_shown() {
        for code in Code::ALL {
            assert!(ROWS.iter().any(|r| r.code == *code), "no row for {code}");
        }
        let names: Vec<String> = Defaults::default().entries().into_iter().map(|(n, _)| n).collect();
        let used: Vec<&str> = ROWS
            .iter()
            .flat_map(|r| match r.due {
                Fixed(_) => vec![],
                Local(a) => vec![a],
                LocalEither(a, b, _) => vec![a, b],
            })
            .collect();
        for name in &used {
            assert!(names.iter().any(|n| n == name), "row names unknown default {name}");
        }
        for name in &names {
            let in_text = ROWS.iter().any(|r| r.when.contains(name.as_str()));
            assert!(used.contains(&name.as_str()) || in_text, "default {name} is in no row");
        }
    }

    #[test]
    fn the_table_shows_overridden_values() {
        let defaults =
            Defaults { routine_phone_patient: crate::pathway::Deadline::WorkingDays(3), ..Defaults::default() };
        let text = render(&defaults);
        assert!(text.contains("3 working days † (routine_phone_patient)"), "{text}");
    }
}
