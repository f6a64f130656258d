//! Child not brought (WNB): the safeguarding children partnership's "was not brought"
//! guidance.
//!
//! Trigger: each `appointment_missed` (any reason counts: not brought, left before seen,
//! taken home against advice, assessment refused). Disengagement "may be partial,
//! intermittent, or persistent", so N is the number of misses in the window (183 days †)
//! up to and including this one, whatever attendances or calls came between. Every row
//! is a local default †: the guidance gives a practice example, not thresholds.
//!
//! Every row here is raised per miss and survives contact (and a discharge): an
//! attendance after a miss does not answer "what impact did the missed appointment have
//! on the child?", nor undo the letter or the referral that miss calls for.

use super::engine::{Ctx, Out, Raise};
use super::records::*;
use super::table::{Done, Due, Owner, Rule, local};
use super::{Code, Priority, Role};
use crate::model::{Event, FactField};

/// This section's rows, in the guidance's order.
pub(super) static RULES: &[&Rule] = &[
    &CONSIDER_IMPACT_ON_CHILD,
    &SEND_WAS_NOT_BROUGHT_LETTER,
    &INFORM_CHILDRENS_SERVICES,
    &REFER_TO_CHILDRENS_SERVICES,
];

pub(crate) fn apply(cx: &Ctx<'_>, out: &mut Out) {
    let d = cx.defaults;
    let misses: Vec<&Event> = cx.events.iter().copied().filter(|e| missed(e)).collect();
    for (i, miss) in misses.iter().copied().enumerate() {
        // The window's edge is exact: a miss at the same local clock time
        // `wnb_window_days` days before counts, one a moment earlier does not.
        let window_start = cx.calendar.days_before(miss.at, d.wnb_window_days);
        let earlier_in_window: Vec<&Event> = misses[..i].iter().copied().filter(|m| m.at >= window_start).collect();
        let n = earlier_in_window.len() + 1;
        consider_impact_on_child(cx, out, miss);
        send_was_not_brought_letter(cx, out, miss);
        inform_childrens_services(cx, out, miss, n);
        refer_to_childrens_services(cx, out, miss, n, &earlier_in_window, window_start);
    }
}

static CONSIDER_IMPACT_ON_CHILD: Rule = Rule {
    code: Code::ConsiderImpactOnChild,
    when: "every miss",
    due: Due::Local(local!(wnb_consider_impact_on_child)),
    done_by: "decision `impact_on_child`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "WNB",
    survives_contact: true,
    done: Done::Any(decided_impact_on_child),
};

/// Every miss: "what impact will the missed appointment have on the child?"
fn consider_impact_on_child(cx: &Ctx<'_>, out: &mut Out, miss: &Event) {
    out.raise(cx, &CONSIDER_IMPACT_ON_CHILD, Raise::new(None, miss.into(), miss.at));
}

static SEND_WAS_NOT_BROUGHT_LETTER: Rule = Rule {
    code: Code::SendWasNotBroughtLetter,
    when: "every miss",
    due: Due::Local(local!(wnb_send_was_not_brought_letter)),
    done_by: "`contact_attempt` by letter to `parent_carer` with `letter: was_not_brought`, after that miss",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::Routine,
    cites: "WNB",
    survives_contact: true,
    done: Done::Any(was_not_brought_letter),
};

/// Every miss: the "was not brought" letter to the parent or carer.
fn send_was_not_brought_letter(cx: &Ctx<'_>, out: &mut Out, miss: &Event) {
    out.raise(cx, &SEND_WAS_NOT_BROUGHT_LETTER, Raise::new(None, miss.into(), miss.at));
}

static INFORM_CHILDRENS_SERVICES: Rule = Rule {
    code: Code::InformChildrensServices,
    when: "each miss at which N >= `wnb_inform_at_misses`, or `childrens_services_involved` (from the \
           `fact_changed` that set it if after the miss)",
    due: Due::Local(local!(wnb_inform_childrens_services)),
    done_by: "`communication` to `childrens_services` after that miss",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "WNB",
    survives_contact: true,
    done: Done::Any(told_childrens_services),
};

/// Each miss at which N reaches the threshold (2 †), or when Children's Services
/// already know the child: inform them. Known to them only since after the miss: from
/// when that was recorded.
fn inform_childrens_services(cx: &Ctx<'_>, out: &mut Out, miss: &Event, n: usize) {
    let raise = Raise::new(None, miss.into(), miss.at);
    if n >= cx.defaults.wnb_inform_at_misses as usize {
        out.raise(cx, &INFORM_CHILDRENS_SERVICES, raise);
    } else if cx.facts.childrens_services_involved {
        let since = cx.flag_since(FactField::ChildrensServicesInvolved);
        out.raise(cx, &INFORM_CHILDRENS_SERVICES, raise.learnt(since));
    }
}

static REFER_TO_CHILDRENS_SERVICES: Rule = Rule {
    code: Code::ReferToChildrensServices,
    when: "a miss at which N >= `wnb_refer_at_misses`, or one after a `communication` to `childrens_services` \
           made after an earlier miss in the window (\"if the next one is missed\"); not while a referral in the \
           window exists",
    due: Due::Local(local!(wnb_refer_to_childrens_services)),
    done_by: "`referral_made` to `childrens_services`, for any `reason` (`neglect_of_health_needs` is the usual one)",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::Urgent,
    cites: "WNB",
    survives_contact: true,
    done: Done::Any(referred_to_childrens_services),
};

/// A miss at which N reaches the referral threshold (3 †), or one that follows a
/// communication to Children's Services made after an earlier miss in the window (the
/// "if the next one is missed" agreement): refer for neglect of health needs, unless a
/// referral within the window already exists. A referral for any reason does it: any
/// referral reaches Children's Services.
fn refer_to_childrens_services(
    cx: &Ctx<'_>,
    out: &mut Out,
    miss: &Event,
    n: usize,
    earlier_in_window: &[&Event],
    window_start: jiff::Timestamp,
) {
    let agreed = earlier_in_window.first().is_some_and(|first| {
        cx.events.iter().any(|e| told_childrens_services(e) && e.at >= first.at && e.at <= miss.at && e.id != miss.id)
    });
    let referred =
        cx.events.iter().any(|e| referred_to_childrens_services(e) && e.at >= window_start && e.at <= miss.at);
    if (n >= cx.defaults.wnb_refer_at_misses as usize || agreed) && !referred {
        out.raise(cx, &REFER_TO_CHILDRENS_SERVICES, Raise::new(None, miss.into(), miss.at));
    }
}
