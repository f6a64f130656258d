//! Routine referral (5.1.2), where there are no known or suspected significant risks.
//!
//! Trigger T: the first `appointment_missed` of an `initial` appointment in a cycle.

use super::engine::{Ctx, Cycle, Out, Raise, Rules};
use super::records::*;
use super::table::{Done, Due, Owner, Rule, local};
use super::{Code, Priority, Role, across};
use crate::model::Event;

/// This section's rows, in the policy's order.
pub(super) static RULES: &[&Rule] = &[
    &PHONE_PATIENT,
    &WRITE_TO_PATIENT,
    &NOTIFY_REFERRER,
    &NOTIFY_GP,
    &NOTIFY_OTHER_AGENCIES,
    &AGREE_JOINT_PLAN,
    &CONSIDER_ONWARD_REFERRAL,
    &OFFER_APPOINTMENT,
];

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
            across::offer_appointment(cx, out, &OFFER_APPOINTMENT, &cycle, contact);
        }
    }
}

static PHONE_PATIENT: Rule = Rule {
    code: Code::PhonePatient,
    when: "T",
    due: Due::Local(local!(routine_phone_patient)),
    done_by: "`contact_attempt` by `phone` to the patient",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::Routine,
    cites: "5.1.2",
    survives_contact: false,
    done: Done::Any(phone_to_patient),
};

/// Phone the patient within 2 working days (†). Done by a phone call to the patient.
fn phone_patient(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    out.raise(cx, &PHONE_PATIENT, Raise::new(Some(c), t.into(), t.at));
}

static WRITE_TO_PATIENT: Rule = Rule {
    code: Code::WriteToPatient,
    when: "the first phone call to the patient after T failed (any outcome but `contact_made`): from the call",
    due: Due::Local(local!(routine_write_to_patient)),
    done_by: "`contact_attempt` by `letter_first_class` to the patient with `letter: request_contact`",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::Routine,
    cites: "5.1.2",
    survives_contact: false,
    done: Done::Any(first_class_request_contact_letter),
};

/// That phone call failed (any outcome but `contact_made`): write first class asking
/// the patient to get in touch, within 1 working day of the call (†).
fn write_to_patient(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, call: &Event) {
    out.raise(cx, &WRITE_TO_PATIENT, Raise::new(Some(c), call.into(), call.at));
}

/// The rows after the letter share what they wait for and how long they have.
const AFTER_LETTER: &str =
    "no contact by 7 days after the first letter (of either kind) to the patient after T (upcoming from the letter)";

static NOTIFY_REFERRER: Rule = Rule {
    code: Code::NotifyReferrer,
    when: AFTER_LETTER,
    due: Due::Local(local!(routine_notifications_after_letter)),
    done_by: "`communication` to `referrer`",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::Routine,
    cites: "5.1.2",
    survives_contact: false,
    done: Done::Any(told_referrer),
};

static NOTIFY_GP: Rule = Rule {
    code: Code::NotifyGp,
    when: AFTER_LETTER,
    due: Due::Local(local!(routine_notifications_after_letter)),
    done_by: "`communication` to `gp`",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::Routine,
    cites: "5.1.2",
    survives_contact: false,
    done: Done::Any(told_gp),
};

static NOTIFY_OTHER_AGENCIES: Rule = Rule {
    code: Code::NotifyOtherAgencies,
    when: AFTER_LETTER,
    due: Due::Local(local!(routine_notifications_after_letter)),
    done_by: "`communication` to `other_agency`, or decision `other_agencies`",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::Routine,
    cites: "5.1.2",
    survives_contact: false,
    done: Done::Any(other_agencies_told),
};

static AGREE_JOINT_PLAN: Rule = Rule {
    code: Code::AgreeJointPlan,
    when: AFTER_LETTER,
    due: Due::Local(local!(routine_notifications_after_letter)),
    done_by: "decision `joint_plan`",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::Routine,
    cites: "5.1.2",
    survives_contact: false,
    done: Done::Any(decided_joint_plan),
};

static CONSIDER_ONWARD_REFERRAL: Rule = Rule {
    code: Code::ConsiderOnwardReferral,
    when: AFTER_LETTER,
    due: Due::Local(local!(routine_notifications_after_letter)),
    done_by: "decision `onward_referral`, or `referral_made` to `another_service`",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::Routine,
    cites: "5.1.2",
    survives_contact: false,
    done: Done::Any(onward_referral_considered),
};

/// No contact by the letter + 7 days: tell the referrer, the GP and other agencies,
/// agree a joint plan and consider an onward referral, each within 1 working day (†).
fn notifications_after_letter(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, letter: &Event) {
    let from = cx.calendar.days_after(letter.at, 7);
    for rule in [&NOTIFY_REFERRER, &NOTIFY_GP, &NOTIFY_OTHER_AGENCIES, &AGREE_JOINT_PLAN, &CONSIDER_ONWARD_REFERRAL] {
        out.raise(cx, rule, Raise::new(Some(c), letter.into(), from));
    }
}

static OFFER_APPOINTMENT: Rule = Rule {
    code: Code::OfferAppointment,
    when: "the first contact after T",
    due: Due::Local(local!(offer_appointment)),
    done_by: "`appointment_booked`, or decision `alternative_appointment`",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::High,
    cites: "5.1.2",
    survives_contact: true,
    done: Done::Any(appointment_offered),
};
