//! Urgent and emergency referral (5.1.1).
//!
//! Trigger T: the first `appointment_missed` of an `initial` appointment in a cycle.
//! A routine referral with `risk: high`, `immediate_risk` or `referrer_child_concern` is
//! evaluated here too (5.1.2 applies only where there are no significant risks).

use super::engine::{Ctx, Cycle, Out, Raise, Rules};
use super::records::*;
use super::table::{Done, Due, Owner, Rule, local};
use super::{Code, Deadline, Priority, Role, across};
use crate::model::{Event, FactField};

/// This section's rows, in the policy's order.
pub(super) static RULES: &[&Rule] = &[
    &CONTACT_PATIENT,
    &CONTACT_FAMILY_CARERS,
    &CONSIDER_COLD_CALL,
    &INFORM_POLICE,
    &OFFER_APPOINTMENT,
    &NOTIFY_REFERRER,
    &NOTIFY_GP,
    &NOTIFY_OTHER_AGENCIES,
    &AGREE_JOINT_PLAN,
    &CONSIDER_MHA_ASSESSMENT,
    &SAFEGUARDING_CHILDREN_DISCUSSION,
    &NOTIFY_REFERRER_OF_CHILD_CONCERN,
    &CONFIRM_TO_REFERRER_IN_WRITING,
];

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
            across::offer_appointment(cx, out, &OFFER_APPOINTMENT, &cycle, contact);
        }
        notifications_after_24_hours(cx, out, &cycle, t);
        if cx.facts.referrer_child_concern {
            referrer_child_concern(cx, out, &cycle, t);
        }
    }
}

static CONTACT_PATIENT: Rule = Rule {
    code: Code::ContactPatient,
    when: "T",
    due: Due::Fixed(Deadline::SameDay),
    done_by: "any `contact_attempt` to the patient",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::Urgent,
    cites: "5.1.1",
    survives_contact: false,
    done: Done::Any(attempt_to_patient),
};

/// Contact the patient the same day. Done by any contact attempt to the patient.
fn contact_patient(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    out.raise(cx, &CONTACT_PATIENT, Raise::new(Some(c), t.into(), t.at));
}

static CONTACT_FAMILY_CARERS: Rule = Rule {
    code: Code::ContactFamilyCarers,
    when: "T",
    due: Due::Local(local!(urgent_contact_family_carers)),
    done_by: "`contact_attempt` to `family_carer`, `named_contact` or `associate`, or decision `family_contact`",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::Urgent,
    cites: "5.1.1",
    survives_contact: false,
    done: Done::Any(family_contact_considered),
};

/// Contact family, carers, named contacts or associates the same day (†). Done by an
/// attempt to one of them, or a decision `family_contact`.
fn contact_family_carers(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    out.raise(cx, &CONTACT_FAMILY_CARERS, Raise::new(Some(c), t.into(), t.at));
}

static CONSIDER_COLD_CALL: Rule = Rule {
    code: Code::ConsiderColdCall,
    when: "T",
    due: Due::Local(local!(urgent_consider_cold_call)),
    done_by: "unannounced `home_visit`, or decision `cold_call`",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::Urgent,
    cites: "5.1.1",
    survives_contact: false,
    done: Done::Any(cold_call_considered),
};

/// Consider a cold call the same day (†). Done by an unannounced home visit, or a
/// decision `cold_call`.
fn consider_cold_call(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    out.raise(cx, &CONSIDER_COLD_CALL, Raise::new(Some(c), t.into(), t.at));
}

static INFORM_POLICE: Rule = Rule {
    code: Code::InformPolice,
    when: "`immediate_risk`: from T, or from the `fact_changed` that set it if later (after the cycle's contact \
           too); discuss with the team manager and a senior clinician where possible",
    due: Due::Fixed(Deadline::Immediately),
    done_by: "`communication` to `police`",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::Urgent,
    cites: "5.1.1",
    survives_contact: true,
    done: Done::Any(told_police),
};

/// With `immediate_risk`, inform the police immediately: from T, or from when the risk
/// became known if later (discussing with the team manager and a senior clinician
/// where possible). Done by a communication to the police. Survives contact, and a
/// risk learnt after the cycle's contact still raises it: contact does not mean the
/// team already knows.
fn inform_police(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    let since = cx.flag_since(FactField::ImmediateRisk);
    out.raise(cx, &INFORM_POLICE, Raise::new(Some(c), t.into(), t.at).learnt(since));
}

static OFFER_APPOINTMENT: Rule = Rule {
    code: Code::OfferAppointment,
    when: "the first contact after T",
    due: Due::Local(local!(offer_appointment)),
    done_by: "`appointment_booked`, or decision `alternative_appointment`",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::High,
    cites: "5.1.1",
    survives_contact: true,
    done: Done::Any(appointment_offered),
};

/// The 24-hour rows share what they wait for and how long they have.
const AFTER_24_HOURS: &str = "no contact by T + 24 h (upcoming from T)";

static NOTIFY_REFERRER: Rule = Rule {
    code: Code::NotifyReferrer,
    when: AFTER_24_HOURS,
    due: Due::Local(local!(urgent_notifications_after_24_hours)),
    done_by: "`communication` to `referrer`",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::High,
    cites: "5.1.1",
    survives_contact: false,
    done: Done::Any(told_referrer),
};

static NOTIFY_GP: Rule = Rule {
    code: Code::NotifyGp,
    when: AFTER_24_HOURS,
    due: Due::Local(local!(urgent_notifications_after_24_hours)),
    done_by: "`communication` to `gp`",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::High,
    cites: "5.1.1",
    survives_contact: false,
    done: Done::Any(told_gp),
};

static NOTIFY_OTHER_AGENCIES: Rule = Rule {
    code: Code::NotifyOtherAgencies,
    when: AFTER_24_HOURS,
    due: Due::Local(local!(urgent_notifications_after_24_hours)),
    done_by: "`communication` to `other_agency`, or decision `other_agencies`",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::High,
    cites: "5.1.1",
    survives_contact: false,
    done: Done::Any(other_agencies_told),
};

static AGREE_JOINT_PLAN: Rule = Rule {
    code: Code::AgreeJointPlan,
    when: AFTER_24_HOURS,
    due: Due::Local(local!(urgent_notifications_after_24_hours)),
    done_by: "decision `joint_plan`",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::High,
    cites: "5.1.1",
    survives_contact: false,
    done: Done::Any(decided_joint_plan),
};

static CONSIDER_MHA_ASSESSMENT: Rule = Rule {
    code: Code::ConsiderMhaAssessment,
    when: AFTER_24_HOURS,
    due: Due::Local(local!(consider_mha_assessment)),
    done_by: "decision `mha_assessment`",
    owner: Owner::Role(Role::Assessor),
    priority: Priority::High,
    cites: "5.1.1, 5.4",
    survives_contact: false,
    done: Done::Any(decided_mha_assessment),
};

/// With no contact by T + 24 hours: tell the referrer, the GP and other agencies, agree
/// a joint plan and consider a Mental Health Act assessment (5.4), each the same day as
/// T + 24 h (†); and with a community treatment order or conditional discharge,
/// consider recall. Shown as upcoming from T; cancelled by contact before then.
fn notifications_after_24_hours(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    let from = cx.calendar.hours_after(t.at, 24);
    for rule in [&NOTIFY_REFERRER, &NOTIFY_GP, &NOTIFY_OTHER_AGENCIES, &AGREE_JOINT_PLAN, &CONSIDER_MHA_ASSESSMENT] {
        out.raise(cx, rule, Raise::new(Some(c), t.into(), from));
    }
    across::consider_recall(cx, out, Raise::new(Some(c), t.into(), from));
}

/// The referrer's concern for children: what it calls for, from T or from when it was
/// set (after the cycle's contact too).
const CHILD_CONCERN: &str = "`referrer_child_concern`: from T, or from the `fact_changed` that set it if later \
                             (after the cycle's contact too)";

static SAFEGUARDING_CHILDREN_DISCUSSION: Rule = Rule {
    code: Code::SafeguardingChildrenDiscussion,
    when: CHILD_CONCERN,
    due: Due::Local(local!(urgent_safeguarding_children_discussion)),
    done_by: "`communication`s to `safeguarding_children_team` and to one of `team_manager`, `line_manager`, \
              `safeguarding_supervisor`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.1.1",
    survives_contact: true,
    done: Done::All(&[told_safeguarding_children_team, told_manager_or_supervisor]),
};

static NOTIFY_REFERRER_OF_CHILD_CONCERN: Rule = Rule {
    code: Code::NotifyReferrer,
    when: CHILD_CONCERN,
    due: Due::Local(local!(urgent_notify_referrer_of_child_concern)),
    done_by: "`communication` to `referrer`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.1.1",
    survives_contact: true,
    done: Done::Any(told_referrer),
};

static CONFIRM_TO_REFERRER_IN_WRITING: Rule = Rule {
    code: Code::ConfirmToReferrerInWriting,
    when: CHILD_CONCERN,
    due: Due::Local(local!(urgent_notify_referrer_of_child_concern)),
    done_by: "`communication` to `referrer` with `channel: writing`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.1.1",
    survives_contact: true,
    done: Done::Any(told_referrer_in_writing),
};

/// The referrer told us of concerns about the impact on children: the same day (†),
/// discuss with the safeguarding children team and a manager or supervisor, tell the
/// referrer, and confirm to them in writing. All three survive contact, and a concern
/// learnt after the cycle's contact still raises them.
fn referrer_child_concern(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    let since = cx.flag_since(FactField::ReferrerChildConcern);
    for rule in [&SAFEGUARDING_CHILDREN_DISCUSSION, &NOTIFY_REFERRER_OF_CHILD_CONCERN, &CONFIRM_TO_REFERRER_IN_WRITING]
    {
        out.raise(cx, rule, Raise::new(Some(c), t.into(), t.at).learnt(since));
    }
}
