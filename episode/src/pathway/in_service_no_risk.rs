//! In receipt of services, no identified risk (5.3), with 5.7 for known disengagers.
//!
//! Applies to `in_service` when `risk` is `low` and `children` is false. Trigger T: the
//! second consecutive `appointment_missed` (no contact between them: the second miss
//! in a cycle).

use super::engine::{Ctx, Cycle, Out, Raise, Rules, Trigger};
use super::records::*;
use super::table::{Done, Due, Owner, Rule, local};
use super::{Code, Priority, Role, across};
use crate::model::{Deterioration, Event, FactField};

/// This section's rows, in the policy's order.
pub(super) static RULES: &[&Rule] = &[
    &CONTACT_PATIENT,
    &CONTACT_FAMILY_CARERS,
    &OFFER_APPOINTMENT,
    &STEP_UP,
    &DISCHARGE_PER_CPA,
    &SEND_DISCHARGE_WARNING_LETTER,
    &ARRANGE_MDT,
    &ARRANGE_MDT_FOR_A_KNOWN_DISENGAGER,
    &CONSIDER_MHA_ASSESSMENT,
];

pub(crate) fn apply(cx: &Ctx<'_>, out: &mut Out) {
    for cycle in cx.cycles(Rules::InServiceNoRisk) {
        let Some(t) = cycle.all(missed).nth(1) else { continue };
        contact_patient(cx, out, &cycle, t);
        if let Some(attempt) = cycle.first_after(t, failed_attempt_to_patient) {
            contact_family_carers(cx, out, &cycle, attempt);
        }
        if let Some(family) = cycle.first_after(t, attempt_to_family) {
            if cx.facts.known_disengager {
                mdt_for_a_known_disengager(cx, out, &cycle, family);
            } else {
                send_discharge_warning_letter(cx, out, &cycle, family);
            }
        }
        if let Some(letter) = cycle.first_after(t, discharge_warning_letter) {
            mdt_after_warning_letter(cx, out, &cycle, letter);
        }
        if let Some(contact) = cycle.contact() {
            across::offer_appointment(cx, out, &OFFER_APPOINTMENT, &cycle, contact);
            after_contact(cx, out, contact);
        }
    }
}

static CONTACT_PATIENT: Rule = Rule {
    code: Code::ContactPatient,
    when: "T",
    due: Due::Local(local!(no_risk_contact_patient)),
    done_by: "any `contact_attempt` to the patient",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::Routine,
    cites: "5.3",
    survives_contact: false,
    done: Done::Any(attempt_to_patient),
};

/// Contact the patient within 2 working days (†). Done by any attempt to the patient.
fn contact_patient(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    out.raise(cx, &CONTACT_PATIENT, Raise::new(Some(c), t.into(), t.at));
}

static CONTACT_FAMILY_CARERS: Rule = Rule {
    code: Code::ContactFamilyCarers,
    when: "the first attempt to the patient after T failed: from the attempt",
    due: Due::Local(local!(no_risk_contact_family_carers)),
    done_by: "`contact_attempt` to `family_carer`, `named_contact` or `associate`, or decision `family_contact`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::Routine,
    cites: "5.3",
    survives_contact: false,
    done: Done::Any(family_contact_considered),
};

/// That attempt failed: contact family or carers within 2 working days of it (†).
fn contact_family_carers(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, attempt: &Event) {
    out.raise(cx, &CONTACT_FAMILY_CARERS, Raise::new(Some(c), attempt.into(), attempt.at));
}

static SEND_DISCHARGE_WARNING_LETTER: Rule = Rule {
    code: Code::SendDischargeWarningLetter,
    when: "the first family contact attempt after T (any outcome), the patient still not reached; not \
           `known_disengager`",
    due: Due::Local(local!(no_risk_send_discharge_warning_letter)),
    done_by: "a letter to the patient with `letter: discharge_warning` (offering another venue and time; saying \
              discharge follows 3 weeks without contact)",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::Routine,
    cites: "5.3",
    survives_contact: false,
    done: Done::Any(discharge_warning_letter),
};

/// A family contact attempt was made (any outcome) and the patient is still not
/// reached: send the discharge warning letter within 2 working days (†). It offers
/// another venue and time, and says the patient will be discharged after 3 weeks
/// without contact.
fn send_discharge_warning_letter(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, family: &Event) {
    out.raise(cx, &SEND_DISCHARGE_WARNING_LETTER, Raise::new(Some(c), family.into(), family.at));
}

static ARRANGE_MDT: Rule = Rule {
    code: Code::ArrangeMdt,
    when: "no contact by 21 days after the first discharge warning letter after T (upcoming from the letter)",
    due: across::ARRANGE_MDT_DUE,
    done_by: across::ARRANGE_MDT_DONE_BY,
    owner: Owner::Role(Role::TeamManager),
    priority: Priority::High,
    cites: "5.3, 5.6",
    survives_contact: true,
    done: Done::Any(quorate_mdt),
};

static CONSIDER_MHA_ASSESSMENT: Rule = Rule {
    code: Code::ConsiderMhaAssessment,
    when: "with either `arrange_mdt` of this section",
    due: Due::Local(local!(consider_mha_assessment)),
    done_by: "decision `mha_assessment`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.3, 5.4",
    survives_contact: false,
    done: Done::Any(decided_mha_assessment),
};

/// No contact by the warning letter + 21 days: arrange an MDT (5.6), and with it
/// consider a Mental Health Act assessment and recall (5.4). Upcoming until then;
/// cancelled by contact before then.
fn mdt_after_warning_letter(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, letter: &Event) {
    let from = cx.calendar.days_after(letter.at, 21);
    let trigger: Trigger = letter.into();
    across::arrange_mdt(cx, out, &ARRANGE_MDT, Raise::new(Some(c), trigger, from));
    out.raise(cx, &CONSIDER_MHA_ASSESSMENT, Raise::new(Some(c), trigger, from));
    across::consider_recall(cx, out, Raise::new(Some(c), trigger, from));
}

static ARRANGE_MDT_FOR_A_KNOWN_DISENGAGER: Rule = Rule {
    code: Code::ArrangeMdt,
    when: "`known_disengager`: in place of `send_discharge_warning_letter`, at the same moment (or from the \
           `fact_changed` that set `known_disengager` if later, after the cycle's contact too)",
    due: across::ARRANGE_MDT_DUE,
    done_by: across::ARRANGE_MDT_DONE_BY,
    owner: Owner::Role(Role::TeamManager),
    priority: Priority::High,
    cites: "5.7, 5.6",
    survives_contact: true,
    done: Done::Any(quorate_mdt),
};

/// 5.7: discharge "for failing to keep their appointment" may not be appropriate for a
/// patient known to disengage and re-engage: the warning letter is replaced by an MDT,
/// raised at the same moment with the MDT's own deadline, and with it a Mental Health
/// Act assessment and recall are considered (5.4). The GP is kept informed through the
/// MDT's plan (`share_mdt_plan`).
fn mdt_for_a_known_disengager(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, family: &Event) {
    let since = cx.flag_since(FactField::KnownDisengager);
    let at = || Raise::new(Some(c), family.into(), family.at).learnt(since);
    across::arrange_mdt(cx, out, &ARRANGE_MDT_FOR_A_KNOWN_DISENGAGER, at());
    out.raise(cx, &CONSIDER_MHA_ASSESSMENT, at());
    across::consider_recall(cx, out, at());
}

static OFFER_APPOINTMENT: Rule = Rule {
    code: Code::OfferAppointment,
    when: "the first contact after T",
    due: Due::Local(local!(offer_appointment)),
    done_by: "`appointment_booked`, or decision `alternative_appointment`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.3",
    survives_contact: true,
    done: Done::Any(appointment_offered),
};

static STEP_UP: Rule = Rule {
    code: Code::StepUp,
    when: "the first contact after T found `deterioration` `suspected` or `confirmed`",
    due: Due::Local(local!(no_risk_step_up)),
    done_by: "`referral_made` to `community_treatment_team`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.3",
    survives_contact: true,
    done: Done::Any(referred_to_community_treatment_team),
};

static DISCHARGE_PER_CPA: Rule = Rule {
    code: Code::DischargePerCpa,
    when: "the first contact after T found the patient well (`deterioration: none`) and `wishes_discharge`",
    due: Due::Local(local!(no_risk_discharge_per_cpa)),
    done_by: "`discharged`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::Routine,
    cites: "5.3",
    survives_contact: true,
    done: Done::Any(discharged),
};

/// The contact found deterioration: step up within 1 working day (†). The patient is
/// well and wishes to be discharged: discharge under CPA within 10 working days (†).
/// Both survive contact (they are raised by one), and a discharge does not end a step
/// up still owed: a deteriorating patient discharged without it is the hazard.
fn after_contact(cx: &Ctx<'_>, out: &mut Out, contact: &Event) {
    let Some((deterioration, wishes_discharge)) = contact_findings(contact) else { return };
    match deterioration {
        Some(Deterioration::Suspected | Deterioration::Confirmed) => {
            out.raise(cx, &STEP_UP, Raise::new(None, contact.into(), contact.at));
        }
        Some(Deterioration::None) if wishes_discharge == Some(true) => {
            out.raise(cx, &DISCHARGE_PER_CPA, Raise::new(None, contact.into(), contact.at));
        }
        _ => {}
    }
}
