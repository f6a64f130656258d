//! In receipt of services, with risks identified or children (5.2).
//!
//! Applies to `in_service` when `risk` is `high` or `children` is true. Trigger T0: the
//! first `appointment_missed` in a cycle. The patient is **disengaged** at T, the later
//! of the first failed phone call to the patient after T0 and the first letter to the
//! patient after T0 (in either order), with no contact since T0.

use super::engine::{Ctx, Cycle, DoneBy, Out, Raise, Rules};
use super::records::*;
use super::{Code, Deadline, Priority, Role, WarningCode, across};
use crate::model::Event;

const CITES: &str = "5.2";

pub(crate) fn apply(cx: &Ctx<'_>, out: &mut Out) {
    for cycle in cx.cycles(Rules::InServiceRisk) {
        let Some(t0) = cycle.first(missed) else { continue };
        transfer_before_reengagement(out, &cycle, t0);
        phone_patient(cx, out, &cycle, t0);
        let call = cycle.first_after(t0, failed_phone_to_patient);
        if let Some(call) = call {
            write_to_patient(cx, out, &cycle, call);
        }
        let letter = cycle.first_after(t0, letter_to_patient);
        let (Some(call), Some(letter)) = (call, letter) else { continue };
        let t = if (letter.at, letter.id) > (call.at, call.id) { letter } else { call };
        disengaged(cx, out, &cycle, t);
    }
}

/// What follows once the patient is disengaged at T.
fn disengaged(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    let d = cx.defaults;
    let rows: [(Code, Deadline, Is); 4] = [
        (Code::ContactElectronically, d.risk_contact_electronically, electronic_to_patient),
        (Code::ContactFamilyCarers, d.risk_contact_family_carers, family_contact_considered),
        (Code::ContactOtherProviders, d.risk_contact_other_providers, other_providers_contacted),
        (Code::UnannouncedHomeVisit, d.risk_unannounced_home_visit, unannounced_visit),
    ];
    for (code, due, done) in rows {
        out.raise(
            cx,
            Raise {
                code,
                cites: CITES,
                owner: Role::CareCoordinator,
                priority: Priority::High,
                cycle: Some(c),
                trigger: t.into(),
                survives_contact: false,
                active_from: t.at,
                due,
                done_by: DoneBy::Any(done),
            },
        );
    }
    if cx.facts.children {
        assess_parenting_impact(cx, out, c, t);
    }
    escalation(cx, out, c, t);
    if let Some(contact) = c.contact() {
        full_assessment(cx, out, contact);
    }
}

/// Phone the patient the same day as the missed appointment (†).
fn phone_patient(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t0: &Event) {
    out.raise(
        cx,
        Raise {
            code: Code::PhonePatient,
            cites: CITES,
            owner: Role::CareCoordinator,
            priority: Priority::High,
            cycle: Some(c),
            trigger: t0.into(),
            survives_contact: false,
            active_from: t0.at,
            due: cx.defaults.risk_phone_patient,
            done_by: DoneBy::Any(phone_to_patient),
        },
    );
}

/// A phone call to the patient failed: write to them (any letter) within 1 working day
/// of the call (†).
fn write_to_patient(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, call: &Event) {
    out.raise(
        cx,
        Raise {
            code: Code::WriteToPatient,
            cites: CITES,
            owner: Role::CareCoordinator,
            priority: Priority::High,
            cycle: Some(c),
            trigger: call.into(),
            survives_contact: false,
            active_from: call.at,
            due: cx.defaults.risk_write_to_patient,
            done_by: DoneBy::Any(letter_to_patient),
        },
    );
}

/// Escalate to the team manager the same day as the first unannounced visit after T
/// without contact, or as `unannounced_home_visit` going overdue without one, whichever
/// is first. Until then it is shown as upcoming at the visit's deadline. With it:
/// consider police support, intensive support and a Mental Health Act assessment (†),
/// and recall (5.4); with children, tell the referrer by phone and in writing and
/// inform Children's Services (†). Once done and still no contact: arrange an MDT (5.6).
fn escalation(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    let visit_due = cx.calendar.deadline(t.at, cx.defaults.risk_unannounced_home_visit);
    let moment = match c.first_after(t, unannounced_visit_without_contact) {
        Some(visit) if visit.at <= visit_due => visit.at,
        _ => visit_due,
    };
    let escalated = out.raise(
        cx,
        Raise {
            code: Code::EscalateToTeamManager,
            cites: CITES,
            owner: Role::CareCoordinator,
            priority: Priority::High,
            cycle: Some(c),
            trigger: t.into(),
            survives_contact: false,
            active_from: moment,
            due: Deadline::SameDay,
            done_by: DoneBy::Any(told_team_manager),
        },
    );

    let considerations: [(Code, Is); 2] = [
        (Code::ConsiderPoliceSupport, decided_police_support),
        (Code::ConsiderIntensiveSupport, intensive_support_considered),
    ];
    for (code, done) in considerations {
        out.raise(
            cx,
            Raise {
                code,
                cites: CITES,
                owner: Role::CareCoordinator,
                priority: Priority::High,
                cycle: Some(c),
                trigger: t.into(),
                survives_contact: false,
                active_from: moment,
                due: cx.defaults.risk_considerations_with_escalation,
                done_by: DoneBy::Any(done),
            },
        );
    }
    across::consider_mha_assessment(cx, out, c, t.into(), moment, "5.2, 5.4", Role::CareCoordinator);
    across::consider_recall(cx, out, c, t.into(), moment);

    if cx.facts.children {
        let rows: [(Code, DoneBy); 3] = [
            (Code::NotifyReferrer, DoneBy::Any(told_referrer_by_phone)),
            (Code::ConfirmToReferrerInWriting, DoneBy::Any(told_referrer_in_writing)),
            (Code::InformChildrensServices, DoneBy::ChildrensServicesKnown),
        ];
        for (code, done_by) in rows {
            let due = match code {
                Code::InformChildrensServices => cx.defaults.risk_inform_childrens_services,
                _ => cx.defaults.risk_notify_referrer,
            };
            out.raise(
                cx,
                Raise {
                    code,
                    cites: CITES,
                    owner: Role::CareCoordinator,
                    priority: Priority::High,
                    cycle: Some(c),
                    trigger: t.into(),
                    survives_contact: false,
                    active_from: moment,
                    due,
                    done_by,
                },
            );
        }
    }

    if let Some(done) = escalated.done {
        across::arrange_mdt(cx, out, c, done, "5.6, 5.2");
    }
}

/// With children, at T: assess the impact on parenting with a manager, supervisor or
/// the safeguarding children team, and record a decision `parenting_impact`, within 1
/// working day (†). Survives contact.
fn assess_parenting_impact(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    const DONE: &[Is] = &[told_about_parenting, decided_parenting_impact];
    out.raise(
        cx,
        Raise {
            code: Code::AssessParentingImpact,
            cites: CITES,
            owner: Role::CareCoordinator,
            priority: Priority::High,
            cycle: Some(c),
            trigger: t.into(),
            survives_contact: true,
            active_from: t.at,
            due: cx.defaults.risk_assess_parenting_impact,
            done_by: DoneBy::All(DONE),
        },
    );
}

/// The first contact after T: complete a full assessment of needs and risk within 7
/// days. Survives contact (it is raised by one).
fn full_assessment(cx: &Ctx<'_>, out: &mut Out, contact: &Event) {
    out.raise(
        cx,
        Raise {
            code: Code::FullAssessment,
            cites: CITES,
            owner: Role::CareCoordinator,
            priority: Priority::Routine,
            cycle: None,
            trigger: contact.into(),
            survives_contact: true,
            active_from: contact.at,
            due: Deadline::Days(7),
            done_by: DoneBy::Any(assessment_completed),
        },
    );
}

/// A full transfer of care to assertive outreach before the patient re-engages: support
/// may be sought, but no full transfer until re-engaged.
fn transfer_before_reengagement(out: &mut Out, c: &Cycle<'_>, t0: &Event) {
    for referral in c.all(transfer_to_assertive_outreach).filter(|r| r.at >= t0.at) {
        out.warn(
            WarningCode::TransferBeforeReengagement,
            "a full transfer of care to assertive outreach was made before the patient re-engaged (5.2): seek their support, but transfer only once re-engaged".into(),
            None,
            Some(referral.id.to_string()),
        );
    }
}
