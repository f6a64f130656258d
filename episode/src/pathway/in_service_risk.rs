//! In receipt of services, with risks identified or children (5.2).
//!
//! Applies to `in_service` when `risk` is `high` or `children` is true. Trigger T0: the
//! first `appointment_missed` in a cycle. The patient is **disengaged** at T, the later
//! of the first failed phone call to the patient after T0 and the first letter to the
//! patient after T0 (in either order), with no contact since T0.

use super::engine::{Ctx, Cycle, Out, Raise, Rules};
use super::records::*;
use super::table::{Done, Due, Owner, Rule, local};
use super::{Code, Deadline, Priority, Role, WarningCode, across};
use crate::model::{Event, FactField};

/// This section's rows, in the policy's order.
pub(super) static RULES: &[&Rule] = &[
    &PHONE_PATIENT,
    &WRITE_TO_PATIENT,
    &CONTACT_ELECTRONICALLY,
    &CONTACT_FAMILY_CARERS,
    &CONTACT_OTHER_PROVIDERS,
    &UNANNOUNCED_HOME_VISIT,
    &ESCALATE_TO_TEAM_MANAGER,
    &CONSIDER_POLICE_SUPPORT,
    &CONSIDER_INTENSIVE_SUPPORT,
    &CONSIDER_MHA_ASSESSMENT,
    &ASSESS_PARENTING_IMPACT,
    &NOTIFY_REFERRER,
    &CONFIRM_TO_REFERRER_IN_WRITING,
    &INFORM_CHILDRENS_SERVICES,
    &FULL_ASSESSMENT,
    &ARRANGE_MDT,
];

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

static PHONE_PATIENT: Rule = Rule {
    code: Code::PhonePatient,
    when: "T0",
    due: Due::Local(local!(risk_phone_patient)),
    done_by: "`contact_attempt` by `phone` to the patient",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.2",
    survives_contact: false,
    done: Done::Any(phone_to_patient),
};

/// Phone the patient the same day as the missed appointment (†).
fn phone_patient(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t0: &Event) {
    out.raise(cx, &PHONE_PATIENT, Raise::new(Some(c), t0.into(), t0.at));
}

static WRITE_TO_PATIENT: Rule = Rule {
    code: Code::WriteToPatient,
    when: "the first phone call to the patient after T0 failed: from the call",
    due: Due::Local(local!(risk_write_to_patient)),
    done_by: "a letter of either kind to the patient",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.2",
    survives_contact: false,
    done: Done::Any(letter_to_patient),
};

/// A phone call to the patient failed: write to them (any letter) within 1 working day
/// of the call (†).
fn write_to_patient(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, call: &Event) {
    out.raise(cx, &WRITE_TO_PATIENT, Raise::new(Some(c), call.into(), call.at));
}

static CONTACT_ELECTRONICALLY: Rule = Rule {
    code: Code::ContactElectronically,
    when: "T (disengaged)",
    due: Due::Local(local!(risk_contact_electronically)),
    done_by: "`contact_attempt` by `sms` or `email` to the patient",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.2",
    survives_contact: false,
    done: Done::Any(electronic_to_patient),
};

static CONTACT_FAMILY_CARERS: Rule = Rule {
    code: Code::ContactFamilyCarers,
    when: "T",
    due: Due::Local(local!(risk_contact_family_carers)),
    done_by: "`contact_attempt` to `family_carer`, `named_contact` or `associate`, or decision `family_contact`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.2",
    survives_contact: false,
    done: Done::Any(family_contact_considered),
};

static CONTACT_OTHER_PROVIDERS: Rule = Rule {
    code: Code::ContactOtherProviders,
    when: "T",
    due: Due::Local(local!(risk_contact_other_providers)),
    done_by: "`contact_attempt` to `other_provider`, or decision `other_providers`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.2",
    survives_contact: false,
    done: Done::Any(other_providers_contacted),
};

static UNANNOUNCED_HOME_VISIT: Rule = Rule {
    code: Code::UnannouncedHomeVisit,
    when: "T",
    due: Due::Local(local!(risk_unannounced_home_visit)),
    done_by: "unannounced `home_visit` after T",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.2",
    survives_contact: false,
    done: Done::Any(unannounced_visit),
};

/// What follows once the patient is disengaged at T: text or email, contact family and
/// other providers, and an unannounced visit, each within 1 working day (†); with
/// children, the impact on parenting; the escalation; and, at the first contact after
/// T, a full assessment.
fn disengaged(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    for rule in [&CONTACT_ELECTRONICALLY, &CONTACT_FAMILY_CARERS, &CONTACT_OTHER_PROVIDERS, &UNANNOUNCED_HOME_VISIT] {
        out.raise(cx, rule, Raise::new(Some(c), t.into(), t.at));
    }
    if cx.facts.children {
        assess_parenting_impact(cx, out, c, t);
    }
    escalation(cx, out, c, t);
    if let Some(contact) = c.contact() {
        full_assessment(cx, out, contact);
    }
}

/// The escalation's moment, as the rows raised with it say it.
const WITH_ESCALATION: &str = "with the escalation";

static ESCALATE_TO_TEAM_MANAGER: Rule = Rule {
    code: Code::EscalateToTeamManager,
    when: "the first unannounced visit after T without contact, or `unannounced_home_visit` going overdue without \
           one, whichever is first (upcoming at the visit's deadline until then)",
    due: Due::Fixed(Deadline::SameDay),
    done_by: "`communication` to `team_manager`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.2",
    survives_contact: false,
    done: Done::Any(told_team_manager),
};

static CONSIDER_POLICE_SUPPORT: Rule = Rule {
    code: Code::ConsiderPoliceSupport,
    when: WITH_ESCALATION,
    due: Due::Local(local!(risk_considerations_with_escalation)),
    done_by: "decision `police_support`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.2",
    survives_contact: false,
    done: Done::Any(decided_police_support),
};

static CONSIDER_INTENSIVE_SUPPORT: Rule = Rule {
    code: Code::ConsiderIntensiveSupport,
    when: WITH_ESCALATION,
    due: Due::Local(local!(risk_considerations_with_escalation)),
    done_by: "decision `intensive_support`, or `referral_made` to `home_treatment` or `assertive_outreach`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.2",
    survives_contact: false,
    done: Done::Any(intensive_support_considered),
};

static CONSIDER_MHA_ASSESSMENT: Rule = Rule {
    code: Code::ConsiderMhaAssessment,
    when: WITH_ESCALATION,
    due: Due::Local(local!(consider_mha_assessment)),
    done_by: "decision `mha_assessment`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.2, 5.4",
    survives_contact: false,
    done: Done::Any(decided_mha_assessment),
};

/// With children, the rows raised with the escalation (or when `children` was set).
const CHILDREN_WITH_ESCALATION: &str =
    "`children`, with the escalation (or from the `fact_changed` that set `children` if later)";

static NOTIFY_REFERRER: Rule = Rule {
    code: Code::NotifyReferrer,
    when: CHILDREN_WITH_ESCALATION,
    due: Due::Local(local!(risk_notify_referrer)),
    done_by: "`communication` to `referrer` with `channel: phone`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.2",
    survives_contact: false,
    done: Done::Any(told_referrer_by_phone),
};

static CONFIRM_TO_REFERRER_IN_WRITING: Rule = Rule {
    code: Code::ConfirmToReferrerInWriting,
    when: CHILDREN_WITH_ESCALATION,
    due: Due::Local(local!(risk_notify_referrer)),
    done_by: "`communication` to `referrer` with `channel: writing`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.2",
    survives_contact: false,
    done: Done::Any(told_referrer_in_writing),
};

static INFORM_CHILDRENS_SERVICES: Rule = Rule {
    code: Code::InformChildrensServices,
    when: CHILDREN_WITH_ESCALATION,
    due: Due::Local(local!(risk_inform_childrens_services)),
    done_by: "a decision `childrens_services_known` naming the services engaged with the children in its \
              rationale, and a `communication` to one of `health_visitor`, `school_nurse`, `gp`, `education`, \
              `childrens_services` (none needed if the outcome is `not_applicable`)",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.2",
    survives_contact: false,
    done: Done::ChildrensServicesKnown,
};

static ARRANGE_MDT: Rule = Rule {
    code: Code::ArrangeMdt,
    when: "`escalate_to_team_manager` done and still no contact: from the record that did it",
    due: across::ARRANGE_MDT_DUE,
    done_by: across::ARRANGE_MDT_DONE_BY,
    owner: Owner::Role(Role::TeamManager),
    priority: Priority::High,
    cites: "5.6, 5.2",
    survives_contact: true,
    done: Done::Any(quorate_mdt),
};

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
    let escalated = out.raise(cx, &ESCALATE_TO_TEAM_MANAGER, Raise::new(Some(c), t.into(), moment));
    for rule in [&CONSIDER_POLICE_SUPPORT, &CONSIDER_INTENSIVE_SUPPORT, &CONSIDER_MHA_ASSESSMENT] {
        out.raise(cx, rule, Raise::new(Some(c), t.into(), moment));
    }
    across::consider_recall(cx, out, Raise::new(Some(c), t.into(), moment));

    if cx.facts.children {
        let since = cx.flag_since(FactField::Children);
        for rule in [&NOTIFY_REFERRER, &CONFIRM_TO_REFERRER_IN_WRITING, &INFORM_CHILDRENS_SERVICES] {
            out.raise(cx, rule, Raise::new(Some(c), t.into(), moment).learnt(since));
        }
    }

    if let Some(done) = escalated.done {
        across::arrange_mdt(cx, out, &ARRANGE_MDT, Raise::new(Some(c), done, done.at));
    }
}

static ASSESS_PARENTING_IMPACT: Rule = Rule {
    code: Code::AssessParentingImpact,
    when: "`children`, at T (or from the `fact_changed` that set `children` if later, after the cycle's contact too)",
    due: Due::Local(local!(risk_assess_parenting_impact)),
    done_by: "a `communication` to one of `team_manager`, `line_manager`, `safeguarding_supervisor`, \
              `safeguarding_children_team`, and a decision `parenting_impact`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.2",
    survives_contact: true,
    done: Done::All(&[told_about_parenting, decided_parenting_impact]),
};

/// With children, at T: assess the impact on parenting with a manager, supervisor or
/// the safeguarding children team, and record a decision `parenting_impact`, within 1
/// working day (†). Survives contact, and `children` learnt after the cycle's contact
/// still raises it.
fn assess_parenting_impact(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, t: &Event) {
    let since = cx.flag_since(FactField::Children);
    out.raise(cx, &ASSESS_PARENTING_IMPACT, Raise::new(Some(c), t.into(), t.at).learnt(since));
}

static FULL_ASSESSMENT: Rule = Rule {
    code: Code::FullAssessment,
    when: "the first contact after T (a `reengaged`, a `seen` visit, a `contact_made`, an attendance)",
    due: Due::Fixed(Deadline::Days(7)),
    done_by: "`assessment_completed`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::Routine,
    cites: "5.2",
    survives_contact: true,
    done: Done::Any(assessment_completed),
};

/// The first contact after T: complete a full assessment of needs and risk within 7
/// days. Survives contact (it is raised by one), and a discharge does not end it.
fn full_assessment(cx: &Ctx<'_>, out: &mut Out, contact: &Event) {
    out.raise(cx, &FULL_ASSESSMENT, Raise::new(None, contact.into(), contact.at));
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
