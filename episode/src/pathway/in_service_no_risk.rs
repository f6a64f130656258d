//! In receipt of services, no identified risk (5.3), with 5.7 for known disengagers.
//!
//! Applies to `in_service` when `risk` is `low` and `children` is false. Trigger T: the
//! second consecutive `appointment_missed` (no contact between them: the second miss
//! in a cycle).

use super::engine::{Ctx, Cycle, DoneBy, Out, Raise, Rules, Trigger};
use super::records::*;
use super::{Code, Priority, Role, across};
use crate::model::{Deterioration, Event};

const CITES: &str = "5.3";

pub(crate) fn apply(cx: &Ctx<'_>, out: &mut Out) {
    for cycle in cx.cycles(Rules::InServiceNoRisk) {
        let Some(t) = cycle.all(missed).nth(1) else { continue };
        contact_patient(cx, out, &cycle, t);
        if let Some(attempt) = cycle.first_after(t, failed_attempt_to_patient) {
            contact_family_carers(cx, out, &cycle, attempt);
        }
        if let Some(family) = cycle.first_after(t, attempt_to_family) {
            if cx.facts.known_disengager {
                // 5.7: discharge "for failing to keep their appointment" may not be
                // appropriate: the warning letter is replaced by an MDT, raised at the
                // same moment with the MDT's own deadline.
                across::arrange_mdt(cx, out, &cycle, family.into(), "5.7, 5.6");
                across::consider_mha_assessment(
                    cx,
                    out,
                    &cycle,
                    family.into(),
                    family.at,
                    "5.3, 5.4",
                    Role::CareCoordinator,
                );
                across::consider_recall(cx, out, &cycle, family.into(), family.at);
            } else {
                send_discharge_warning_letter(cx, out, &cycle, family);
            }
        }
        if let Some(letter) = cycle.first_after(t, discharge_warning_letter) {
            mdt_after_warning_letter(cx, out, &cycle, letter);
        }
        if let Some(contact) = cycle.contact() {
            across::offer_appointment(cx, out, &cycle, contact, CITES, Role::CareCoordinator);
            after_contact(cx, out, contact);
        }
    }
}

/// Contact the patient within 2 working days (†). Done by any attempt to the patient.
fn contact_patient(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    out.raise(
        cx,
        Raise {
            code: Code::ContactPatient,
            cites: CITES,
            owner: Role::CareCoordinator,
            priority: Priority::Routine,
            cycle: Some(c),
            trigger: t.into(),
            survives_contact: false,
            active_from: t.at,
            due: cx.defaults.no_risk_contact_patient,
            done_by: DoneBy::Any(attempt_to_patient),
        },
    );
}

/// That attempt failed: contact family or carers within 2 working days of it (†).
fn contact_family_carers(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, attempt: &Event) {
    out.raise(
        cx,
        Raise {
            code: Code::ContactFamilyCarers,
            cites: CITES,
            owner: Role::CareCoordinator,
            priority: Priority::Routine,
            cycle: Some(c),
            trigger: attempt.into(),
            survives_contact: false,
            active_from: attempt.at,
            due: cx.defaults.no_risk_contact_family_carers,
            done_by: DoneBy::Any(family_contact_considered),
        },
    );
}

/// A family contact attempt was made (any outcome) and the patient is still not
/// reached: send the discharge warning letter within 2 working days (†). It offers
/// another venue and time, and says the patient will be discharged after 3 weeks
/// without contact.
fn send_discharge_warning_letter(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, family: &Event) {
    out.raise(
        cx,
        Raise {
            code: Code::SendDischargeWarningLetter,
            cites: CITES,
            owner: Role::CareCoordinator,
            priority: Priority::Routine,
            cycle: Some(c),
            trigger: family.into(),
            survives_contact: false,
            active_from: family.at,
            due: cx.defaults.no_risk_send_discharge_warning_letter,
            done_by: DoneBy::Any(discharge_warning_letter),
        },
    );
}

/// No contact by the warning letter + 21 days: arrange an MDT (5.6), and with it
/// consider a Mental Health Act assessment and recall (5.4). Upcoming until then;
/// cancelled by contact before then.
fn mdt_after_warning_letter(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, letter: &Event) {
    let from = cx.calendar.days_after(letter.at, 21);
    let trigger: Trigger = letter.into();
    across::arrange_mdt_from(cx, out, c, trigger, from, "5.3, 5.6");
    across::consider_mha_assessment(cx, out, c, trigger, from, "5.3, 5.4", Role::CareCoordinator);
    across::consider_recall(cx, out, c, trigger, from);
}

/// The contact found deterioration: step up within 1 working day (†). The patient is
/// well and wishes to be discharged: discharge under CPA within 10 working days (†).
/// Both survive contact (they are raised by one).
fn after_contact(cx: &Ctx<'_>, out: &mut Out, contact: &Event) {
    let Some((deterioration, wishes_discharge)) = contact_findings(contact) else { return };
    match deterioration {
        Some(Deterioration::Suspected | Deterioration::Confirmed) => {
            out.raise(
                cx,
                Raise {
                    code: Code::StepUp,
                    cites: CITES,
                    owner: Role::CareCoordinator,
                    priority: Priority::High,
                    cycle: None,
                    trigger: contact.into(),
                    survives_contact: true,
                    active_from: contact.at,
                    due: cx.defaults.no_risk_step_up,
                    done_by: DoneBy::Any(referred_to_community_treatment_team),
                },
            );
        }
        Some(Deterioration::None) if wishes_discharge == Some(true) => {
            out.raise(
                cx,
                Raise {
                    code: Code::DischargePerCpa,
                    cites: CITES,
                    owner: Role::CareCoordinator,
                    priority: Priority::Routine,
                    cycle: None,
                    trigger: contact.into(),
                    survives_contact: true,
                    active_from: contact.at,
                    due: cx.defaults.no_risk_discharge_per_cpa,
                    done_by: DoneBy::Any(discharged),
                },
            );
        }
        _ => {}
    }
}
