//! Home treatment, high risk (Appendix A).
//!
//! Trigger T: a `home_visit` without contact, or a phone call to the patient with any
//! outcome but `contact_made` (the first in a cycle). Home treatment always follows
//! Appendix A, whatever `risk` says. All four actions are urgent, and all are cancelled
//! by contact.

use super::engine::{Ctx, Out, Raise, Rules};
use super::records::*;
use super::table::{Done, Due, Owner, Rule, local};
use super::{Code, Deadline, Priority, Role, across};

/// This section's rows, in the policy's order.
pub(super) static RULES: &[&Rule] = &[
    &PHONE_PATIENT,
    &UNANNOUNCED_HOME_VISIT,
    &ESCALATE_TO_TEAM_MANAGER,
    &CONSIDER_POLICE_SUPPORT,
    &CONSIDER_MHA_ASSESSMENT,
    &ARRANGE_MDT,
];

/// Each cycle's T raises the four urgent rows, a Mental Health Act assessment and
/// recall to consider (5.4), and, once the escalation is done and still no contact, an
/// MDT (5.6).
pub(crate) fn apply(cx: &Ctx<'_>, out: &mut Out) {
    for cycle in cx.cycles(Rules::HomeTreatment) {
        let Some(t) = cycle.first(|e| visit_without_contact(e) || failed_phone_to_patient(e)) else { continue };
        let at = || Raise::new(Some(&cycle), t.into(), t.at);
        for rule in [&PHONE_PATIENT, &UNANNOUNCED_HOME_VISIT, &CONSIDER_POLICE_SUPPORT, &CONSIDER_MHA_ASSESSMENT] {
            out.raise(cx, rule, at());
        }
        let escalated = out.raise(cx, &ESCALATE_TO_TEAM_MANAGER, at());
        across::consider_recall(cx, out, at());
        if let Some(done) = escalated.done {
            across::arrange_mdt(cx, out, &ARRANGE_MDT, Raise::new(Some(&cycle), done, done.at));
        }
    }
}

/// Phone the patient or a named contact within the hour.
static PHONE_PATIENT: Rule = Rule {
    code: Code::PhonePatient,
    when: "T",
    due: Due::Fixed(Deadline::Hours(1)),
    done_by: "`contact_attempt` by `phone` to the patient or a `named_contact`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::Urgent,
    cites: "A",
    survives_contact: false,
    done: Done::Any(phone_to_patient_or_named_contact),
};

/// An unannounced visit within two hours; if nobody answers, a card through the letter
/// box asking the patient to get in touch urgently (`leave_calling_card`, across
/// pathways).
static UNANNOUNCED_HOME_VISIT: Rule = Rule {
    code: Code::UnannouncedHomeVisit,
    when: "T",
    due: Due::Fixed(Deadline::Hours(2)),
    done_by: "unannounced `home_visit` (then `leave_calling_card`: a card through the letter box asking the patient \
              to get in touch urgently)",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::Urgent,
    cites: "A",
    survives_contact: false,
    done: Done::Any(unannounced_visit),
};

/// Escalate within four hours to the team manager, the service manager or the on-call
/// manager; the on-call manager owns it when the deadline falls outside 09:00 to 17:00
/// on a working day.
static ESCALATE_TO_TEAM_MANAGER: Rule = Rule {
    code: Code::EscalateToTeamManager,
    when: "T",
    due: Due::Fixed(Deadline::Hours(4)),
    done_by: "`communication` to `team_manager`, `service_manager` or `on_call_manager`",
    owner: Owner::OfficeHours { in_hours: Role::TeamManager, out_of_hours: Role::OnCallManager },
    priority: Priority::Urgent,
    cites: "A",
    survives_contact: false,
    done: Done::Any(told_a_manager_on_call),
};

/// Consider police support within four hours.
static CONSIDER_POLICE_SUPPORT: Rule = Rule {
    code: Code::ConsiderPoliceSupport,
    when: "T",
    due: Due::Fixed(Deadline::Hours(4)),
    done_by: "decision `police_support`, or `communication` to `police`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::Urgent,
    cites: "A",
    survives_contact: false,
    done: Done::Any(police_support_considered),
};

/// 5.4, with the escalation (raised at T).
static CONSIDER_MHA_ASSESSMENT: Rule = Rule {
    code: Code::ConsiderMhaAssessment,
    when: "T, with the escalation",
    due: Due::Local(local!(consider_mha_assessment)),
    done_by: "decision `mha_assessment`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "A, 5.4",
    survives_contact: false,
    done: Done::Any(decided_mha_assessment),
};

/// 5.6: the escalation done and still no contact.
static ARRANGE_MDT: Rule = Rule {
    code: Code::ArrangeMdt,
    when: "`escalate_to_team_manager` done and still no contact: from the record that did it",
    due: across::ARRANGE_MDT_DUE,
    done_by: across::ARRANGE_MDT_DONE_BY,
    owner: Owner::Role(Role::TeamManager),
    priority: Priority::High,
    cites: "5.6, A",
    survives_contact: true,
    done: Done::Any(quorate_mdt),
};
