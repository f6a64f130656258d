//! What every rule shares: the current facts (safer side on conflict), the records that
//! count, cycles, and raising an action and finding the record that did it.
//!
//! No rule lives here: the pathway modules say when an action is raised and their rules
//! (`table::Rule`) how long it has and what does it; this module applies the general
//! rules of `docs/rules.md` ("Cycles", "Contact cancels", "A risk learnt after contact",
//! "A discharge", "Upcoming", "Done by") the same way for all of them.

use jiff::Timestamp;
use uuid::Uuid;

use super::records;
use super::table::{Done, Owner, Rule};
use super::{Action, Calendar, Code, Deadline, Defaults, Evaluation, Priority, Role, State, Warning, WarningCode};
use crate::model::*;

/// Which set of rules applies: a pathway, with in-service split by risk (5.2, 5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Rules {
    UrgentReferral,
    RoutineReferral,
    InServiceRisk,
    InServiceNoRisk,
    HomeTreatment,
    ChildNotBrought,
}

/// The facts the rules use: on a conflict, the safer value.
#[derive(Clone, Debug)]
pub(crate) struct Current<'a> {
    pub(crate) pathways: &'a [Pathway],
    pub(crate) risk: Risk,
    pub(crate) children: bool,
    pub(crate) referrer_child_concern: bool,
    pub(crate) immediate_risk: bool,
    pub(crate) known_disengager: bool,
    pub(crate) legal_status: LegalStatus,
    pub(crate) safeguarding: Safeguarding,
    pub(crate) childrens_services_involved: bool,
}

impl<'a> Current<'a> {
    fn new(facts: &'a Facts) -> Self {
        // Safeguarding concerns combine: a conflict between `adult` and `child` means
        // someone has seen each, so both apply (safer than either alone).
        let sg = facts.safeguarding.values();
        let child = sg.iter().any(|s| s.includes_child());
        let adult = sg.iter().any(|s| s.includes_adult());
        let safeguarding = match (adult, child) {
            (true, true) => Safeguarding::Both,
            (false, true) => Safeguarding::Child,
            (true, false) => Safeguarding::Adult,
            (false, false) => Safeguarding::None,
        };
        Self {
            pathways: facts.pathway.values(),
            risk: *facts.risk.safest(),
            children: *facts.children.safest(),
            referrer_child_concern: *facts.referrer_child_concern.safest(),
            immediate_risk: *facts.immediate_risk.safest(),
            known_disengager: *facts.known_disengager.safest(),
            legal_status: *facts.legal_status.safest(),
            safeguarding,
            childrens_services_involved: *facts.childrens_services_involved.safest(),
        }
    }

    /// The rules that apply ("Which rules apply"): the pathway with the shorter
    /// deadlines on a conflict, a routine referral with significant risk as urgent,
    /// in-service by risk and children, and `child_not_brought` beside any other.
    pub(crate) fn pathways(&self) -> impl Iterator<Item = Rules> {
        let mut rules = [None, None];
        if let Some(pathway) = self.pathways.iter().copied().filter(|p| *p != Pathway::ChildNotBrought).max() {
            rules[0] = Some(match pathway {
                Pathway::RoutineReferral
                    if self.risk == Risk::High || self.immediate_risk || self.referrer_child_concern =>
                {
                    Rules::UrgentReferral
                }
                Pathway::RoutineReferral => Rules::RoutineReferral,
                Pathway::UrgentReferral => Rules::UrgentReferral,
                Pathway::InService if self.risk == Risk::High || self.children => Rules::InServiceRisk,
                Pathway::InService => Rules::InServiceNoRisk,
                Pathway::HomeTreatment => Rules::HomeTreatment,
                Pathway::ChildNotBrought => unreachable!("filtered out above"),
            });
        }
        if self.pathways.contains(&Pathway::ChildNotBrought) {
            rules[1] = Some(Rules::ChildNotBrought);
        }
        rules.into_iter().flatten()
    }

    /// Whether the recall rules apply (5.4).
    pub(crate) fn recallable(&self) -> bool {
        matches!(self.legal_status, LegalStatus::Cto | LegalStatus::ConditionalDischarge)
    }

    /// High risk: `risk: high`, or home treatment, which is high risk by definition (A).
    pub(crate) fn high_risk(&self) -> bool {
        self.risk == Risk::High || self.pathways.contains(&Pathway::HomeTreatment)
    }
}

/// Everything a rule reads.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) episode: &'a Episode,
    pub(crate) facts: Current<'a>,
    /// The records that count: valid and not entered in error, by time then id.
    pub(crate) events: Vec<&'a Event>,
    /// Their times, side by side: finding the records from a time searches these rather
    /// than following a pointer to each record it looks at.
    times: Vec<Timestamp>,
    pub(crate) calendar: &'a Calendar,
    pub(crate) defaults: &'a Defaults,
    pub(crate) now: Timestamp,
    /// Each record listed in a `filed_to_epr`, with the first filing that lists it
    /// (records entered in error included, so their correction can be filed).
    filed: Filings<'a>,
    /// Deadlines already worked out in this evaluation.
    deadlines: DeadlineMemo,
    /// Whether any record that counts is a `discharged` (most episodes have none).
    has_discharge: bool,
}

/// What raised an action: a record, or the episode's opening. Its id is the record's,
/// or the episode's for the opening: a plain UUID, as `Action::trigger` is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Trigger {
    pub(crate) id: Uuid,
    pub(crate) at: Timestamp,
}

impl From<&Event> for Trigger {
    fn from(event: &Event) -> Self {
        Self { id: event.id.into(), at: event.at }
    }
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(episode: &'a Episode, now: Timestamp, calendar: &'a Calendar, defaults: &'a Defaults) -> Self {
        // Corrections are rare: a short list beats a hash set here. Records mostly come
        // in order already: whether they do is seen in the same pass (which reads each
        // record once, rather than once per question).
        let mut in_error: Vec<EventId> = Vec::new();
        let mut in_order = true;
        let mut any_discharge = false;
        let mut previous: Option<&Event> = None;
        for event in &episode.events {
            match &event.body {
                EventBody::EnteredInError(eie) => in_error.push(eie.record),
                EventBody::Discharged(_) => any_discharge = true,
                _ => {}
            }
            in_order &= previous.is_none_or(|p| (p.at, p.id) <= (event.at, event.id));
            previous = Some(event);
        }
        let mut events: Vec<&Event> = episode.events.iter().collect();
        if !in_error.is_empty() {
            events.retain(|e| !in_error.contains(&e.id));
        }
        if !in_order {
            events.sort_unstable_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
        }
        let filed = Filings::new(&events);
        let times = events.iter().map(|e| e.at).collect();
        let deadlines = DeadlineMemo::default();
        // (A discharge entered in error no longer counts.)
        let has_discharge = any_discharge && events.iter().any(|e| records::discharged(e));
        Self {
            episode,
            facts: Current::new(&episode.facts),
            events,
            times,
            calendar,
            defaults,
            now,
            filed,
            deadlines,
            has_discharge,
        }
    }

    /// The episode's cycles for these rules ("Cycles"): the records between one contact
    /// (or discharge) and the next. The last cycle is still open.
    pub(crate) fn cycles(&self, rules: Rules) -> Vec<Cycle<'_>> {
        let child = rules == Rules::ChildNotBrought;
        // A few contacts per episode: room for them, so the list seldom grows.
        let mut cycles = Vec::with_capacity(4);
        let mut start = 0;
        for (i, event) in self.events.iter().enumerate() {
            let contact = records::is_contact(event, child);
            if contact || matches!(event.body, EventBody::Discharged(_)) {
                // A discharge closes the cycle but is not contact: what the cycle still
                // owes is cancelled only by the first contact after it ("A discharge").
                let canceller = if contact {
                    Some(*event)
                } else {
                    self.events[i + 1..].iter().copied().find(|e| records::is_contact(e, child))
                };
                cycles.push(Cycle {
                    key: (rules, cycles.len()),
                    records: &self.events[start..i],
                    closer: Some(event),
                    canceller,
                    child,
                });
                start = i + 1;
            }
        }
        cycles.push(Cycle {
            key: (rules, cycles.len()),
            records: &self.events[start..],
            closer: None,
            canceller: None,
            child,
        });
        cycles
    }

    /// Since when a flag that is true now has been true: the record that set it to true
    /// last (the first of the latest run of changes to `true`), or the episode's opening.
    pub(crate) fn flag_since(&self, field: FactField) -> Trigger {
        self.since(field, |value| *value == FactValue::Flag(true))
    }

    /// Since when a fact has held a value of a kind (`holds`): the first record of the
    /// latest run of `fact_changed` records of the field whose values are of that kind,
    /// or the episode's opening when none is.
    pub(crate) fn since(&self, field: FactField, holds: impl Fn(&FactValue) -> bool) -> Trigger {
        let mut since = None;
        let mut in_run = false;
        for event in &self.events {
            if let EventBody::FactChanged(change) = &event.body
                && change.field == field
            {
                let kind = holds(&change.value);
                if kind && !in_run {
                    since = Some(Trigger::from(*event));
                }
                in_run = kind;
            }
        }
        since.unwrap_or(self.opening())
    }

    /// The episode's opening, as a trigger.
    pub(crate) fn opening(&self) -> Trigger {
        Trigger { id: self.episode.id.into(), at: self.episode.opened_at }
    }

    /// Whether a `filed_to_epr` lists the record.
    pub(crate) fn is_filed(&self, record: EventId) -> bool {
        self.filing(record).is_some()
    }

    fn filing(&self, record: EventId) -> Option<&'a Event> {
        self.filed.get(record)
    }

    /// When a deadline counted from `from` falls.
    pub(crate) fn deadline(&self, from: Timestamp, deadline: Deadline) -> Timestamp {
        self.deadlines.get(self.calendar, from, deadline)
    }

    /// The first discharge at or after `at`, other than the trigger.
    #[cold]
    #[inline(never)]
    fn discharge_from(&self, at: Timestamp, trigger: Trigger) -> Option<&'a Event> {
        self.records_from(at).iter().copied().find(|e| *e.id.as_uuid() != trigger.id && records::discharged(e))
    }

    /// The records at or after `at`.
    fn records_from(&self, at: Timestamp) -> &[&'a Event] {
        let start = self.times.partition_point(|t| *t < at);
        &self.events[start..]
    }

    /// Finds what does an action: the first record other than the trigger, at or after
    /// the trigger's time ("Actions"), that satisfies the rule's "done by".
    fn resolve(&self, trigger: Trigger, done: &Done) -> Option<&'a Event> {
        let candidates = self.records_from(trigger.at);
        let first = |pred: &dyn Fn(&Event) -> bool| {
            candidates.iter().copied().find(|e| pred(e) && *e.id.as_uuid() != trigger.id)
        };
        match done {
            Done::Any(pred) => first(pred),
            Done::All(preds) => {
                let mut last: Option<&Event> = None;
                for pred in preds.iter() {
                    let found = first(pred)?;
                    if last.is_none_or(|l| (found.at, found.id) > (l.at, l.id)) {
                        last = Some(found);
                    }
                }
                last
            }
            Done::CardForTheVisit => {
                first(&|e| matches!(&e.body, EventBody::CallingCardLeft(c) if *c.visit.as_uuid() == trigger.id))
            }
            // A filing that names the record does it whatever the two devices' clocks
            // said: the order of times is no evidence against it.
            Done::FilingOfTheRecord => self.filing(trigger.id.into()),
            Done::ChildrensServicesKnown => {
                let decision = first(&records::decision_childrens_services_known)?;
                if matches!(&decision.body, EventBody::Decision(d) if d.outcome == DecisionOutcome::NotApplicable) {
                    return Some(decision);
                }
                let told = first(&records::communication_to_childrens_services_partner)?;
                Some(if (told.at, told.id) > (decision.at, decision.id) { told } else { decision })
            }
        }
    }
}

/// Each record listed in a `filed_to_epr`, with the first filing (by time) that lists
/// it: a small hash table (open addressing) keyed by the record's id. Every record's
/// filing is looked up, and a sorted list with a binary search per record cost more
/// than the rule itself.
#[derive(Debug)]
struct Filings<'a> {
    /// A power of two slots, at most half of them full, so a search always ends.
    slots: Vec<Option<(u128, &'a Event)>>,
}

impl<'a> Filings<'a> {
    /// From the records that count, by time.
    fn new(events: &[&'a Event]) -> Self {
        // Each filing's list lies elsewhere in memory: copy them all into one list first,
        // in a loop that does nothing else, so that those reads overlap.
        let mut listed: Vec<(u128, &'a Event)> = Vec::with_capacity(events.len());
        for event in events {
            if let EventBody::FiledToEpr(filing) = &event.body {
                listed.extend(filing.records.iter().map(|record| (record.as_uuid().as_u128(), *event)));
            }
        }
        if listed.is_empty() {
            return Self { slots: Vec::new() };
        }
        let mut filings = Self { slots: vec![None; (2 * listed.len()).next_power_of_two()] };
        for (record, event) in listed {
            let slot = filings.slot(record);
            // The first filing that lists a record (by time) is the one kept.
            if filings.slots[slot].is_none() {
                filings.slots[slot] = Some((record, event));
            }
        }
        filings
    }

    /// The slot that holds the record, or the empty one where it would go.
    fn slot(&self, record: u128) -> usize {
        let mask = self.slots.len() - 1;
        let folded = (record as u64) ^ ((record >> 64) as u64);
        let mut slot = (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & mask;
        while let Some((r, _)) = self.slots[slot]
            && r != record
        {
            slot = (slot + 1) & mask;
        }
        slot
    }

    fn get(&self, record: EventId) -> Option<&'a Event> {
        if self.slots.is_empty() {
            return None;
        }
        self.slots[self.slot(record.as_uuid().as_u128())].map(|(_, filing)| filing)
    }
}

/// The records between two contacts.
#[derive(Debug)]
pub(crate) struct Cycle<'a> {
    key: (Rules, usize),
    /// The records after the previous contact and before the closing one.
    pub(crate) records: &'a [&'a Event],
    /// The contact or discharge that closes the cycle; `None` while it is open.
    pub(crate) closer: Option<&'a Event>,
    /// The contact that cancels what the cycle still owes: the closer if it is a
    /// contact, else the first contact after the discharge that closed it.
    canceller: Option<&'a Event>,
    child: bool,
}

impl<'a> Cycle<'a> {
    /// The first record in the cycle that satisfies `pred`.
    pub(crate) fn first(&self, pred: impl Fn(&Event) -> bool) -> Option<&'a Event> {
        self.records.iter().copied().find(|e| pred(e))
    }

    /// The first record in the cycle after `after` that satisfies `pred`.
    pub(crate) fn first_after(&self, after: &Event, pred: impl Fn(&Event) -> bool) -> Option<&'a Event> {
        self.records.iter().copied().find(|e| (e.at, e.id) > (after.at, after.id) && pred(e))
    }

    /// All records in the cycle that satisfy `pred`.
    pub(crate) fn all(&self, pred: impl Fn(&Event) -> bool) -> impl Iterator<Item = &'a Event> {
        self.records.iter().copied().filter(move |e| pred(e))
    }

    /// The contact that closed the cycle, if it was closed by contact (not discharge).
    pub(crate) fn contact(&self) -> Option<&'a Event> {
        self.closer.filter(|e| records::is_contact(e, self.child))
    }
}

/// One row of a table, raised for one trigger: the rule says everything else.
#[derive(Debug)]
pub(crate) struct Raise<'c> {
    /// The cycle it belongs to, for "contact cancels" and "one action per code per
    /// cycle"; `None` for rows that stand alone (each visit, each record, each miss).
    pub(crate) cycle: Option<&'c Cycle<'c>>,
    pub(crate) trigger: Trigger,
    /// The row's own start: the trigger's time, or a later moment it waits for.
    pub(crate) active_from: Timestamp,
    /// For a row that a fact turns on, since when the fact has held ("A risk learnt
    /// after contact"): when that is later than the row's own start, the row is raised
    /// by that record instead, from its time, with the row's deadline counted from then.
    pub(crate) learnt: Option<Trigger>,
    /// For a rule with two deadlines ([`super::table::Due::Either`]): whether its
    /// condition holds.
    pub(crate) instead: bool,
}

impl<'c> Raise<'c> {
    /// A row raised by `trigger` in `cycle`, active from `active_from`.
    pub(crate) fn new(cycle: Option<&'c Cycle<'c>>, trigger: Trigger, active_from: Timestamp) -> Self {
        Self { cycle, trigger, active_from, learnt: None, instead: false }
    }

    /// The row is on only because a fact holds, and has since `since`.
    pub(crate) fn learnt(self, since: Trigger) -> Self {
        Self { learnt: Some(since), ..self }
    }

    /// Whether the condition of a rule with two deadlines holds.
    pub(crate) fn instead(self, instead: bool) -> Self {
        Self { instead, ..self }
    }
}

/// An action raised by one row, with what settles its state; rows are merged before
/// their state is settled ("one action per code per cycle").
#[derive(Debug)]
struct Raised {
    code: Code,
    cites: &'static str,
    owner: Role,
    priority: Priority,
    trigger: Trigger,
    active_from: Timestamp,
    /// The start the row waited for, before a fact learnt later moved it: contact
    /// before it means the row never applied ("no contact by …").
    moment: Timestamp,
    due: Timestamp,
    survives_contact: bool,
    /// The first record that does it.
    done: Option<(Timestamp, EventId)>,
    /// When the contact that cancels its cycle's actions came.
    closer: Option<Timestamp>,
    /// When a discharge ended it.
    ended: Option<Timestamp>,
    cycle: Option<(Rules, usize)>,
    order: usize,
    /// Merged into an earlier row of its cycle ("one action per code per cycle").
    merged: bool,
}

impl Raised {
    /// Its state at `now` ("Actions", "Contact cancels", "Upcoming"), whether the record
    /// that did it counts, and whether it was ever overdue.
    ///
    /// (It answers in flags, and the action reads the row's own fields, rather than
    /// copies of times and ids being handed back through the stack for every action.)
    #[inline(always)]
    fn outcome(&self, now: Timestamp) -> (State, bool, bool) {
        let (done, cancelled_at, was_active) = self.settle();
        let (state, end) = match (self.done, cancelled_at) {
            (Some((at, _)), _) if done => (State::Done, at),
            (_, Some(at)) => (State::Cancelled, at),
            (_, None) if now < self.active_from => (State::Upcoming, now),
            (_, None) if now > self.due => (State::Overdue, now),
            (_, None) => (State::Open, now),
        };
        let was_overdue = (was_active || done) && end > self.due;
        (state, done, was_overdue)
    }

    /// What settles it whatever `now` is: whether the record that did it counts (it came
    /// before anything cancelled it), when it was cancelled, and whether it ever became
    /// active.
    #[inline(always)]
    fn settle(&self) -> (bool, Option<Timestamp>, bool) {
        if self.closer.is_none() && self.ended.is_none() {
            // Nothing cancels it (most rows: no cycle closed, no discharge).
            return (self.done.is_some(), None, true);
        }
        // Contact came before the moment the row waited for: the condition it waited
        // for ("no contact by …") never held.
        let never_active = self.closer.filter(|c| *c < self.moment);
        // Contact cancels what it finds not done, unless the row survives; a discharge
        // ends only what it ends.
        // (The earliest of the three, written out: this runs for every action.)
        let by_contact = if self.survives_contact { never_active } else { self.closer };
        let cancelled_at = match (by_contact, self.ended) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let done = self.done.is_some_and(|(at, _)| cancelled_at.is_none_or(|c| at <= c));
        (done, cancelled_at, never_active.is_none())
    }

    #[inline(always)]
    fn to_action(&self, id: Uuid, now: Timestamp) -> Action {
        let (state, done, was_overdue) = self.outcome(now);
        Action {
            id,
            code: self.code,
            title: self.code.title().into(),
            cites: self.cites.into(),
            owner: self.owner,
            priority: self.priority,
            state,
            active_from: self.active_from,
            due: self.due,
            resolved_by: if done { self.done.map(|(_, id)| id) } else { None },
            late: done && self.done.is_some_and(|(at, _)| at > self.due),
            was_overdue,
            trigger: self.trigger.id,
        }
    }
}

/// What became of a raised action, for rules that follow from another (5.2 and A raise
/// `arrange_mdt` once the escalation is done).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settled {
    /// The record that did it.
    pub(crate) done: Option<Trigger>,
}

/// The actions and warnings gathered so far.
#[derive(Debug)]
pub(crate) struct Out {
    raised: Vec<Raised>,
    warnings: Vec<Warning>,
}

impl Out {
    pub(crate) fn new(cx: &Ctx<'_>) -> Self {
        // About one action per record (filing), and some more per missed appointment,
        // visit or meeting: room enough that the list is seldom moved as it grows.
        Self { raised: Vec::with_capacity(2 * cx.events.len() + 16), warnings: Vec::new() }
    }

    /// Raises a rule's action; says whether, on its own, it is done at `now`.
    pub(crate) fn raise(&mut self, cx: &Ctx<'_>, rule: &'static Rule, r: Raise<'_>) -> Settled {
        self.raise_inline(cx, rule, r)
    }

    /// [`Self::raise`], inlined where it is called: for the rule that raises an action
    /// for every record (filing), what is the same for every row then folds away.
    #[inline(always)]
    pub(crate) fn raise_inline(&mut self, cx: &Ctx<'_>, rule: &'static Rule, r: Raise<'_>) -> Settled {
        debug_assert!(
            super::table::is_listed(rule),
            "{} ({}) is raised but is not a row of the rule table",
            rule.code,
            rule.cites
        );
        // A fact set after the row's own start raises it from the record that set it.
        let (trigger, active_from) = match r.learnt {
            Some(since) if since.at > r.active_from => (since, since.at),
            _ => (r.trigger, r.active_from),
        };
        // (The filing's case first, here: where the rule is the filing rule, no call to
        // `resolve` is left, and the row is built without going through the stack.)
        let done = match rule.done {
            Done::FilingOfTheRecord => cx.filing(trigger.id.into()),
            ref done => cx.resolve(trigger, done),
        };
        // "A discharge closes the cycle and cancels `offer_appointment` only": another
        // appointment makes no sense once the patient is discharged; everything else
        // still owed stays owed (and is warned of).
        let ended = (rule.code == Code::OfferAppointment).then(|| cx.discharge_from(active_from, trigger)).flatten();
        let due = cx.deadline(active_from, rule.due.deadline(cx.defaults, r.instead));
        let owner = match rule.owner {
            Owner::Role(role) => role,
            Owner::OfficeHours { in_hours, out_of_hours } => {
                if cx.calendar.is_office_hours(due) {
                    in_hours
                } else {
                    out_of_hours
                }
            }
        };
        // (Written straight into the list, and settled there: a row built first and then
        // moved was copied through the stack.)
        self.raised.push(Raised {
            code: rule.code,
            cites: rule.cites,
            owner,
            priority: rule.priority,
            trigger,
            active_from,
            moment: r.active_from,
            due,
            survives_contact: rule.survives_contact,
            done: done.map(|d| (d.at, d.id)),
            closer: r.cycle.and_then(|c| c.canceller).map(|c| c.at),
            ended: ended.map(|e| e.at),
            cycle: r.cycle.map(|c| c.key),
            order: self.raised.len(),
            merged: false,
        });
        // Done at `now` is done whatever `now` is: only what settles it is needed here.
        let (done_counts, ..) = self.raised[self.raised.len() - 1].settle();
        Settled { done: done.filter(|_| done_counts).map(Trigger::from) }
    }

    /// Whether an action of this code was done by this record.
    pub(crate) fn was_resolved_by(&self, code: Code, record: EventId) -> bool {
        self.raised.iter().any(|r| r.code == code && r.done.is_some_and(|(_, id)| id == record))
    }

    pub(crate) fn warn(
        &mut self,
        code: WarningCode,
        message: String,
        field: Option<FactField>,
        record: Option<String>,
    ) {
        self.warnings.push(Warning { code, message, field, record });
    }

    /// Merges the rows that raise one code in one cycle (or from one record) into one
    /// action ("Cycles"): it
    /// keeps the first trigger (so its id never changes as records are added), starts at
    /// the earliest start, is due at the earlier deadline (owned as that row says), and
    /// survives contact if any of its rows does. Then settles every action at `now`.
    pub(crate) fn finish(self, cx: &Ctx<'_>) -> Evaluation {
        let mut raised = self.raised;
        // (cycle, code) -> the row that stands for them; a handful per episode, so a list.
        let mut slots: Vec<((Rules, usize), Code, usize)> = Vec::with_capacity(raised.len());
        let mut any_merged = false;
        for i in 0..raised.len() {
            let Some(cycle) = raised[i].cycle else { continue };
            let code = raised[i].code;
            // One code in one cycle is one action; and so is one code raised by one record
            // in two cycles (an escalation that answers two cycles' four-hour rows raises
            // `arrange_mdt` in each): the action's id is the code and the record's, so
            // there can only be one.
            let trigger = raised[i].trigger.id;
            let Some(&(_, _, slot)) =
                slots.iter().find(|&&(c, k, s)| k == code && (c == cycle || raised[s].trigger.id == trigger))
            else {
                slots.push((cycle, code, i));
                continue;
            };
            let (kept, row) = (&raised[slot], &raised[i]);
            let (active_from, due) = (kept.active_from.min(row.active_from), kept.due.min(row.due));
            let moment = kept.moment.min(row.moment);
            let survives = kept.survives_contact || row.survives_contact;
            // Who owns it, and what it cites, come from the row that set the deadline.
            let (owner, priority, cites) = if row.due < kept.due {
                (row.owner, row.priority, row.cites)
            } else {
                (kept.owner, kept.priority, kept.cites)
            };
            if (row.trigger.at, row.order) < (kept.trigger.at, kept.order) {
                raised.swap(slot, i);
            }
            raised[i].merged = true;
            any_merged = true;
            let kept = &mut raised[slot];
            kept.active_from = active_from;
            kept.moment = moment;
            kept.due = due;
            kept.survives_contact = survives;
            (kept.owner, kept.priority, kept.cites) = (owner, priority, cites);
        }
        // Sort small keys, then build the actions in that order. Most rows (the filings,
        // one per record, raised last and in the records' order) already come in order:
        // sort only the rows before that sorted tail, then merge the two.
        let mut order: Vec<(Timestamp, Timestamp, Code, Uuid, usize)> = raised
            .iter()
            .enumerate()
            .map(|(i, r)| (r.due, r.active_from, r.code, action_id(r.code, r.trigger.id), i))
            .collect();
        // (A key for every row, then the few merged ones dropped: quicker than filtering
        // them out as the keys are made.)
        if any_merged {
            order.retain(|(.., i)| !raised[*i].merged);
        }
        let mut split = order.len().saturating_sub(1);
        while split > 0 && order[split - 1] <= order[split] {
            split -= 1;
        }
        order[..split].sort_unstable();
        #[cfg(debug_assertions)]
        {
            let mut ids: Vec<(Uuid, Code)> = order.iter().map(|o| (o.3, o.2)).collect();
            ids.sort_unstable();
            let twice: Vec<Code> = ids.windows(2).filter(|w| w[0].0 == w[1].0).map(|w| w[0].1).collect();
            assert!(twice.is_empty(), "two rows raised the same code from the same record outside a cycle: {twice:?}");
        }
        let (head, tail) = order.split_at(split);
        let (mut h, mut t) = (0, 0);
        // (A range mapped, so that each action is written straight into the list.)
        let actions = (0..order.len())
            .map(|_| {
                let &(_, _, _, id, i) = if t == tail.len() || (h < head.len() && head[h] < tail[t]) {
                    h += 1;
                    &head[h - 1]
                } else {
                    t += 1;
                    &tail[t - 1]
                };
                raised[i].to_action(id, cx.now)
            })
            .collect();
        let mut warnings = self.warnings;
        if cx.has_discharge {
            // What is still owed at `now`, for "A discharge".
            let owed: Vec<(Trigger, Code)> = raised
                .iter()
                .filter(|r| !r.merged && matches!(r.outcome(cx.now).0, State::Upcoming | State::Open | State::Overdue))
                .map(|r| (r.trigger, r.code))
                .collect();
            super::across::discharge_with_open_actions(cx, &owed, &mut warnings);
        }
        warnings.sort();
        warnings.dedup();
        Evaluation { actions, warnings }
    }
}

/// Deadlines worked out in one evaluation. "Same day" and "N working days" depend only
/// on the local date, so they are kept by date; a small direct-mapped table is enough,
/// as one episode's records fall on a few dates.
#[derive(Debug)]
struct DeadlineMemo {
    slots: std::cell::RefCell<[Option<(u64, Deadline, Timestamp)>; 64]>,
}

impl Default for DeadlineMemo {
    fn default() -> Self {
        Self { slots: std::cell::RefCell::new([None; 64]) }
    }
}

impl DeadlineMemo {
    fn get(&self, calendar: &Calendar, from: Timestamp, deadline: Deadline) -> Timestamp {
        let n = match deadline {
            Deadline::SameDay => 0,
            Deadline::WorkingDays(n) => n,
            Deadline::Immediately | Deadline::Hours(_) | Deadline::Days(_) => return calendar.deadline(from, deadline),
        };
        // London is UTC+0 or UTC+1, so the local date is the UTC date except in the last
        // UTC hour of a day (23:xx UTC is the next day in summer): key on the UTC date, and
        // whether it is that hour. (Unsigned division, cheaper, for times after 1970.)
        let Ok(seconds) = u64::try_from(from.as_second()) else { return calendar.deadline(from, deadline) };
        let day = seconds / 86_400;
        let last_hour = seconds % 86_400 >= 23 * 3600;
        let key = 2 * day + u64::from(last_hour);
        let slot = (day as usize).wrapping_mul(31).wrapping_add(n as usize) % 64;
        let mut slots = self.slots.borrow_mut();
        if let Some((k, d, due)) = slots[slot]
            && k == key
            && d == deadline
        {
            return due;
        }
        let due = calendar.deadline(from, deadline);
        slots[slot] = Some((key, deadline, due));
        due
    }
}

/// An action's id: a UUID (version 8) derived from its code and the id of the record
/// that raised it, so every device and every evaluation gives the same one.
///
/// The trigger's id is combined with a fixed hash of the code and passed through a
/// bijective mix, so distinct (code, trigger) pairs give distinct ids. This function
/// is part of the sync contract: changing it changes every action id.
pub fn action_id(code: Code, trigger: Uuid) -> Uuid {
    let mut x = trigger.as_u128() ^ CODE_HASHES[code as usize];
    x ^= x >> 64;
    x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    x ^= x >> 67;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9_94d0_49bb_1331_11eb);
    x ^= x >> 64;
    uuid::Builder::from_custom_bytes(x.to_be_bytes()).into_uuid()
}

/// FNV-1a (128-bit) of each code's name, computed when compiling.
const CODE_HASHES: [u128; Code::ALL.len()] = {
    let mut hashes = [0u128; Code::ALL.len()];
    let mut i = 0;
    while i < Code::ALL.len() {
        let name = Code::ALL[i].as_str().as_bytes();
        let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
        let mut j = 0;
        while j < name.len() {
            hash ^= name[j] as u128;
            hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
            j += 1;
        }
        hashes[i] = hash;
        i += 1;
    }
    hashes
};

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_deadline_memo_gives_what_the_calendar_gives() {
        // Every half hour of 2026, both clock changes included, for the memoised kinds.
        let calendar = Calendar::england_and_wales();
        let memo = DeadlineMemo::default();
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        for step in 0..(366 * 48) {
            let at = start.checked_add(jiff::SignedDuration::from_mins(30 * step)).unwrap();
            for deadline in [Deadline::SameDay, Deadline::WorkingDays(1), Deadline::WorkingDays(2)] {
                assert_eq!(memo.get(&calendar, at, deadline), calendar.deadline(at, deadline), "{at} {deadline}");
            }
        }
    }

    #[test]
    fn action_ids_are_stable_and_distinct() {
        let trigger: Uuid = "0195a1b2-0000-7000-8000-000000000011".parse().unwrap();
        // Pinned: a change here changes every action id on every device.
        assert_eq!(action_id(Code::ContactPatient, trigger).to_string(), "6a5b99de-93a8-80f0-b082-7fd4e2b4109f");
        let ids: HashSet<Uuid> = Code::ALL.iter().map(|c| action_id(*c, trigger)).collect();
        assert_eq!(ids.len(), Code::ALL.len());
        assert_eq!(action_id(Code::ContactPatient, trigger).get_version_num(), 8);
    }
}
