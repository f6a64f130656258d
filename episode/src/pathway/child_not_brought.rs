//! Child not brought (WNB): the safeguarding children partnership's "was not brought"
//! guidance.
//!
//! Trigger: each `appointment_missed` (any reason counts: not brought, left before seen,
//! taken home against advice, assessment refused). Disengagement "may be partial,
//! intermittent, or persistent", so N is the number of misses in the window (183 days †)
//! up to and including this one, whatever attendances or calls came between. Every row
//! is a local default †: the guidance gives a practice example, not thresholds.
//!
//! Reading: every row here is raised per miss and survives contact. An attendance after
//! a miss does not answer "what impact did the missed appointment have on the child?",
//! nor undo the letter or the referral that miss calls for.

use super::engine::{Ctx, DoneBy, Out, Raise};
use super::records::*;
use super::{Code, Deadline, Priority};
use crate::model::Event;
use crate::pathway::Role;

const CITES: &str = "WNB";

pub(crate) fn apply(cx: &Ctx<'_>, out: &mut Out) {
    let d = cx.defaults;
    let misses: Vec<&Event> = cx.events.iter().copied().filter(|e| missed(e)).collect();
    for (i, miss) in misses.iter().copied().enumerate() {
        let window_start = cx.calendar.days_before(miss.at, d.wnb_window_days);
        let earlier_in_window: Vec<&Event> = misses[..i].iter().copied().filter(|m| m.at >= window_start).collect();
        let n = earlier_in_window.len() + 1;

        // Every miss: consider the impact on the child, and send the "was not brought"
        // letter to the parent or carer.
        raise(
            cx,
            out,
            miss,
            Code::ConsiderImpactOnChild,
            Priority::High,
            d.wnb_consider_impact_on_child,
            decided_impact_on_child,
        );
        raise(
            cx,
            out,
            miss,
            Code::SendWasNotBroughtLetter,
            Priority::Routine,
            d.wnb_send_was_not_brought_letter,
            was_not_brought_letter,
        );

        // Each miss at which N reaches the threshold (2 †), or when Children's Services
        // already know the child: inform them.
        if n >= d.wnb_inform_at_misses as usize || cx.facts.childrens_services_involved {
            raise(
                cx,
                out,
                miss,
                Code::InformChildrensServices,
                Priority::High,
                d.wnb_inform_childrens_services,
                told_childrens_services,
            );
        }

        // A miss at which N reaches the referral threshold (3 †), or one that follows a
        // communication to Children's Services made after an earlier miss in the window
        // (the "if the next one is missed" agreement): refer for neglect of health needs,
        // unless a referral within the window already exists.
        let agreed = earlier_in_window.first().is_some_and(|first| {
            cx.events
                .iter()
                .any(|e| told_childrens_services(e) && e.at >= first.at && e.at <= miss.at && e.id != miss.id)
        });
        let referred =
            cx.events.iter().any(|e| referred_to_childrens_services(e) && e.at >= window_start && e.at <= miss.at);
        if (n >= d.wnb_refer_at_misses as usize || agreed) && !referred {
            raise(
                cx,
                out,
                miss,
                Code::ReferToChildrensServices,
                Priority::Urgent,
                d.wnb_refer_to_childrens_services,
                referred_to_childrens_services,
            );
        }
    }
}

fn raise(cx: &Ctx<'_>, out: &mut Out, miss: &Event, code: Code, priority: Priority, due: Deadline, done: Is) {
    out.raise(
        cx,
        Raise {
            code,
            cites: CITES,
            owner: Role::CareCoordinator,
            priority,
            cycle: None,
            trigger: miss.into(),
            survives_contact: true,
            active_from: miss.at,
            due,
            done_by: DoneBy::Any(done),
        },
    );
}
