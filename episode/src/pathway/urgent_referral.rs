//! Urgent and emergency referral (5.1.1).
//!
//! Trigger T: the first `appointment_missed` of an `initial` appointment in a cycle.
//! A routine referral with `risk: high`, `immediate_risk` or `referrer_child_concern` is
//! evaluated here too (5.1.2 applies only where there are no significant risks).

use super::engine::{Ctx, Cycle, DoneBy, Out, Raise, Rules, Trigger};
use super::records::*;
use super::{Code, Deadline, Priority, Role, across};
use crate::model::{Event, FactField};

const CITES: &str = "5.1.1";

pub(crate) fn apply(cx: &Ctx<'_>, out: &mut Out) {
    for cycle in cx.cycles(Rules::UrgentReferral) {
        let Some(t) = cycle.first(missed_initial) else { continue };
        contact_patient(cx, out, &cycle, t);
        contact_family_carers(cx, out, &cycle, t);
        consider_cold_call(cx, out, &cycle, t);
        if cx.facts.immediate_risk {
            inform_police(cx, out, &cycle, t);
        }
        if let Some(contact) = cycle.contact() {
            across::offer_appointment(cx, out, &cycle, contact, CITES, Role::Assessor);
        }
        notifications_after_24_hours(cx, out, &cycle, t);
        if cx.facts.referrer_child_concern {
            referrer_child_concern(cx, out, &cycle, t);
        }
    }
}

/// Contact the patient the same day. Done by any contact attempt to the patient.
fn contact_patient(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    out.raise(
        cx,
        Raise {
            code: Code::ContactPatient,
            cites: CITES,
            owner: Role::Assessor,
            priority: Priority::Urgent,
            cycle: Some(c),
            trigger: t.into(),
            survives_contact: false,
            active_from: t.at,
            due: Deadline::SameDay,
            done_by: DoneBy::Any(attempt_to_patient),
        },
    );
}

/// Contact family, carers, named contacts or associates the same day (†). Done by an
/// attempt to one of them, or a decision `family_contact`.
fn contact_family_carers(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    out.raise(
        cx,
        Raise {
            code: Code::ContactFamilyCarers,
            cites: CITES,
            owner: Role::Assessor,
            priority: Priority::Urgent,
            cycle: Some(c),
            trigger: t.into(),
            survives_contact: false,
            active_from: t.at,
            due: cx.defaults.urgent_contact_family_carers,
            done_by: DoneBy::Any(family_contact_considered),
        },
    );
}

/// Consider a cold call the same day (†). Done by an unannounced home visit, or a
/// decision `cold_call`.
fn consider_cold_call(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    out.raise(
        cx,
        Raise {
            code: Code::ConsiderColdCall,
            cites: CITES,
            owner: Role::Assessor,
            priority: Priority::Urgent,
            cycle: Some(c),
            trigger: t.into(),
            survives_contact: false,
            active_from: t.at,
            due: cx.defaults.urgent_consider_cold_call,
            done_by: DoneBy::Any(cold_call_considered),
        },
    );
}

/// With `immediate_risk`, inform the police immediately: from T, or from when the risk
/// became known if later (discussing with the team manager and a senior clinician
/// where possible). Done by a communication to the police. Survives contact.
///
/// Reading: a risk recorded only after the patient was reached again belongs to the
/// next cycle, if there is one; the care team holds it while the patient is engaged.
fn inform_police(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    let trigger = later(t.into(), cx.flag_since(FactField::ImmediateRisk));
    if c.closer.is_some_and(|closer| closer.at < trigger.at) {
        return;
    }
    out.raise(
        cx,
        Raise {
            code: Code::InformPolice,
            cites: CITES,
            owner: Role::Assessor,
            priority: Priority::Urgent,
            cycle: Some(c),
            trigger,
            survives_contact: true,
            active_from: trigger.at,
            due: Deadline::Immediately,
            done_by: DoneBy::Any(told_police),
        },
    );
}

/// With no contact by T + 24 hours: tell the referrer, the GP and other agencies, agree
/// a joint plan and consider a Mental Health Act assessment, each the same day as
/// T + 24 h (†). Shown as upcoming from T; cancelled by contact before then.
fn notifications_after_24_hours(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    let from = cx.calendar.hours_after(t.at, 24);
    let due = cx.defaults.urgent_notifications_after_24_hours;
    let rows: [(Code, Is); 4] = [
        (Code::NotifyReferrer, told_referrer),
        (Code::NotifyGp, told_gp),
        (Code::NotifyOtherAgencies, other_agencies_told),
        (Code::AgreeJointPlan, decided_joint_plan),
    ];
    for (code, done) in rows {
        out.raise(
            cx,
            Raise {
                code,
                cites: CITES,
                owner: Role::Assessor,
                priority: Priority::High,
                cycle: Some(c),
                trigger: t.into(),
                survives_contact: false,
                active_from: from,
                due,
                done_by: DoneBy::Any(done),
            },
        );
    }
    across::consider_mha_assessment(cx, out, c, t.into(), from, "5.1.1, 5.4", Role::Assessor);
    across::consider_recall(cx, out, c, t.into(), from);
}

/// The referrer told us of concerns about the impact on children: the same day (†),
/// discuss with the safeguarding children team and a manager or supervisor, tell the
/// referrer, and confirm to them in writing. All three survive contact.
fn referrer_child_concern(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    let trigger = later(t.into(), cx.flag_since(FactField::ReferrerChildConcern));
    if c.closer.is_some_and(|closer| closer.at < trigger.at) {
        return;
    }
    const DISCUSSION: &[Is] = &[told_safeguarding_children_team, told_manager_or_supervisor];
    out.raise(
        cx,
        Raise {
            code: Code::SafeguardingChildrenDiscussion,
            cites: CITES,
            owner: Role::CareCoordinator,
            priority: Priority::High,
            cycle: Some(c),
            trigger,
            survives_contact: true,
            active_from: trigger.at,
            due: cx.defaults.urgent_safeguarding_children_discussion,
            done_by: DoneBy::All(DISCUSSION),
        },
    );
    let rows: [(Code, Is); 2] =
        [(Code::NotifyReferrer, told_referrer), (Code::ConfirmToReferrerInWriting, told_referrer_in_writing)];
    for (code, done) in rows {
        out.raise(
            cx,
            Raise {
                code,
                cites: CITES,
                owner: Role::CareCoordinator,
                priority: Priority::High,
                cycle: Some(c),
                trigger,
                survives_contact: true,
                active_from: trigger.at,
                due: cx.defaults.urgent_notify_referrer_of_child_concern,
                done_by: DoneBy::Any(done),
            },
        );
    }
}

/// The later of two triggers.
fn later(a: Trigger, b: Trigger) -> Trigger {
    if b.at > a.at { b } else { a }
}
