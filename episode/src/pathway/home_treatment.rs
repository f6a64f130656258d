//! Home treatment, high risk (Appendix A).
//!
//! Trigger T: a `home_visit` without contact, or a phone call to the patient with any
//! outcome but `contact_made` (the first in a cycle). Home treatment always follows
//! Appendix A, whatever `risk` says. All four actions are urgent, and all are cancelled
//! by contact.

use super::engine::{Ctx, Cycle, DoneBy, Out, Raise, Rules};
use super::records::*;
use super::{Code, Deadline, Priority, Role, across};
use crate::model::Event;

const CITES: &str = "A";

pub(crate) fn apply(cx: &Ctx<'_>, out: &mut Out) {
    for cycle in cx.cycles(Rules::HomeTreatment) {
        let Some(t) = cycle.first(|e| visit_without_contact(e) || failed_phone_to_patient(e)) else { continue };
        let rows: [(Code, u32, Is); 3] = [
            // Phone the patient or a named contact within the hour.
            (Code::PhonePatient, 1, phone_to_patient_or_named_contact),
            // An unannounced visit within two hours; if nobody answers, a card through
            // the letter box asking the patient to get in touch urgently (see `across`).
            (Code::UnannouncedHomeVisit, 2, unannounced_visit),
            // Consider police support within four hours.
            (Code::ConsiderPoliceSupport, 4, police_support_considered),
        ];
        for (code, hours, done) in rows {
            raise(cx, out, &cycle, t, code, Role::CareCoordinator, hours, DoneBy::Any(done));
        }
        // Escalate within four hours to the team manager, the service manager or the
        // on-call manager; the on-call manager owns it when the deadline falls outside
        // 09:00 to 17:00 on a working day.
        let due = cx.calendar.hours_after(t.at, 4);
        let owner = if cx.calendar.is_office_hours(due) { Role::TeamManager } else { Role::OnCallManager };
        let escalated =
            raise(cx, out, &cycle, t, Code::EscalateToTeamManager, owner, 4, DoneBy::Any(told_a_manager_on_call));

        across::consider_mha_assessment(cx, out, &cycle, t.into(), t.at, "A, 5.4", Role::CareCoordinator);
        across::consider_recall(cx, out, &cycle, t.into(), t.at);
        if let Some(done) = escalated.done {
            across::arrange_mdt(cx, out, &cycle, done, "5.6, A");
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn raise(
    cx: &Ctx<'_>,
    out: &mut Out,
    c: &Cycle<'_>,
    t: &Event,
    code: Code,
    owner: Role,
    hours: u32,
    done_by: DoneBy,
) -> super::engine::Settled {
    out.raise(
        cx,
        Raise {
            code,
            cites: CITES,
            owner,
            priority: Priority::Urgent,
            cycle: Some(c),
            trigger: t.into(),
            survives_contact: false,
            active_from: t.at,
            due: Deadline::Hours(hours),
            done_by,
        },
    )
}
