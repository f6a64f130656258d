//! Routine referral (5.1.2), where there are no known or suspected significant risks.
//!
//! Trigger T: the first `appointment_missed` of an `initial` appointment in a cycle.

use super::engine::{Ctx, Cycle, DoneBy, Out, Raise, Rules};
use super::records::*;
use super::{Code, Priority, Role, across};
use crate::model::Event;

const CITES: &str = "5.1.2";

pub(crate) fn apply(cx: &Ctx<'_>, out: &mut Out) {
    for cycle in cx.cycles(Rules::RoutineReferral) {
        let Some(t) = cycle.first(missed_initial) else { continue };
        phone_patient(cx, out, &cycle, t);
        if let Some(call) = cycle.first_after(t, failed_phone_to_patient) {
            write_to_patient(cx, out, &cycle, call);
        }
        // Reading: "letter + 7 days" counts from the first letter of either kind to the
        // patient after T, so a letter sent early starts the clock early.
        if let Some(letter) = cycle.first_after(t, letter_to_patient) {
            notifications_after_letter(cx, out, &cycle, letter);
        }
        if let Some(contact) = cycle.contact() {
            across::offer_appointment(cx, out, &cycle, contact, CITES, Role::Assessor);
        }
    }
}

/// Phone the patient within 2 working days (†). Done by a phone call to the patient.
fn phone_patient(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    out.raise(
        cx,
        Raise {
            code: Code::PhonePatient,
            cites: CITES,
            owner: Role::Assessor,
            priority: Priority::Routine,
            cycle: Some(c),
            trigger: t.into(),
            survives_contact: false,
            active_from: t.at,
            due: cx.defaults.routine_phone_patient,
            done_by: DoneBy::Any(phone_to_patient),
        },
    );
}

/// That phone call failed (any outcome but `contact_made`): write first class asking
/// the patient to get in touch, within 1 working day of the call (†).
fn write_to_patient(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, call: &Event) {
    out.raise(
        cx,
        Raise {
            code: Code::WriteToPatient,
            cites: CITES,
            owner: Role::Assessor,
            priority: Priority::Routine,
            cycle: Some(c),
            trigger: call.into(),
            survives_contact: false,
            active_from: call.at,
            due: cx.defaults.routine_write_to_patient,
            done_by: DoneBy::Any(first_class_request_contact_letter),
        },
    );
}

/// No contact by the letter + 7 days: tell the referrer, the GP and other agencies,
/// agree a joint plan and consider an onward referral, each within 1 working day (†).
fn notifications_after_letter(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, letter: &Event) {
    let from = cx.calendar.days_after(letter.at, 7);
    let rows: [(Code, Is); 5] = [
        (Code::NotifyReferrer, told_referrer),
        (Code::NotifyGp, told_gp),
        (Code::NotifyOtherAgencies, other_agencies_told),
        (Code::AgreeJointPlan, decided_joint_plan),
        (Code::ConsiderOnwardReferral, onward_referral_considered),
    ];
    for (code, done) in rows {
        out.raise(
            cx,
            Raise {
                code,
                cites: CITES,
                owner: Role::Assessor,
                priority: Priority::Routine,
                cycle: Some(c),
                trigger: letter.into(),
                survives_contact: false,
                active_from: from,
                due: cx.defaults.routine_notifications_after_letter,
                done_by: DoneBy::Any(done),
            },
        );
    }
}
