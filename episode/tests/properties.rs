//! Property tests of the pathway rules: evaluation is deterministic; event order in the
//! input never changes the output; `entered_in_error` restores the state as if the
//! record had never been made; adding an unrelated event never un-does an action; a
//! later `now` never un-does one.
//!
//! The episodes are generated from the model's types directly: any pathway, facts that
//! are sometimes in conflict, and up to 40 records of every kind spread over about two
//! months from 2026-03-02 (so across the clock change and the Easter bank holidays).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use episode::pathway::{self, Calendar, Evaluation, State, evaluate};
use episode::*;
use jiff::{SignedDuration, Timestamp};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use uuid::Uuid;

// ---------------------------------------------------------------------------------
// Generating episodes
// ---------------------------------------------------------------------------------

fn base() -> Timestamp {
    "2026-03-02T08:00:00Z".parse().expect("a valid time")
}

fn plus_minutes(at: Timestamp, minutes: i64) -> Timestamp {
    at.checked_add(SignedDuration::from_mins(minutes)).expect("within jiff's range")
}

/// The id of the `n`th record made: distinct for every `n`, and in no order related
/// to time, so that records made in the same minute are ordered by an arbitrary id.
fn event_id(n: u64) -> Uuid {
    Uuid::from_u128((u128::from(n) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

const METHODS: &[Method] = &[Method::Phone, Method::Sms, Method::Email, Method::Letter, Method::LetterFirstClass];
const TARGETS: &[Target] = &[
    Target::Patient,
    Target::FamilyCarer,
    Target::NamedContact,
    Target::Associate,
    Target::OtherProvider,
    Target::ParentCarer,
];
const OUTCOMES: &[Outcome] = &[
    Outcome::NoAnswer,
    Outcome::MessageLeft,
    Outcome::ContactMade,
    Outcome::WrongNumber,
    Outcome::Declined,
    Outcome::Sent,
];
const LETTERS: &[Letter] =
    &[Letter::RequestContact, Letter::DischargeWarning, Letter::WasNotBrought, Letter::Discharge];
const DETERIORATIONS: &[Deterioration] = &[Deterioration::None, Deterioration::Suspected, Deterioration::Confirmed];
const VISIT_OUTCOMES: &[VisitOutcome] =
    &[VisitOutcome::Seen, VisitOutcome::NoAnswer, VisitOutcome::AccessRefused, VisitOutcome::NotAtAddress];
const PARTIES: &[Party] = &[
    Party::Referrer,
    Party::Gp,
    Party::OtherAgency,
    Party::Police,
    Party::TeamManager,
    Party::LineManager,
    Party::SeniorClinician,
    Party::ServiceManager,
    Party::OnCallManager,
    Party::SafeguardingChildrenTeam,
    Party::SafeguardingSupervisor,
    Party::SafeguardingNurse,
    Party::ChildrensServices,
    Party::HealthVisitor,
    Party::SchoolNurse,
    Party::Education,
    Party::FamilyCarer,
    Party::ResponsibleClinician,
];
const CHANNELS: &[Channel] = &[Channel::Phone, Channel::Writing, Channel::Meeting, Channel::Electronic];
const TOPICS: &[Topic] = &[
    Topic::FamilyContact,
    Topic::ColdCall,
    Topic::AlternativeAppointment,
    Topic::JointPlan,
    Topic::OtherAgencies,
    Topic::OnwardReferral,
    Topic::PoliceSupport,
    Topic::IntensiveSupport,
    Topic::ParentingImpact,
    Topic::ChildrensServicesKnown,
    Topic::OtherProviders,
    Topic::ImpactOnChild,
    Topic::MhaAssessment,
    Topic::Recall,
    Topic::DisengagementPlan,
    Topic::SharePlanWithFamily,
];
const DECISION_OUTCOMES: &[DecisionOutcome] =
    &[DecisionOutcome::Yes, DecisionOutcome::No, DecisionOutcome::NotApplicable];
const RATIONALES: &[&str] = &[
    "discussed with the team; proportionate to the risk",
    "mother reports the child is well; health visitor engaged",
    "no answer at the address, neighbours have not seen him",
    "patient known to the police; previous incidents",
    "not applicable: no other services involved",
];
const REFERRALS: &[ReferralTo] = &[
    ReferralTo::ChildrensServices,
    ReferralTo::CommunityTreatmentTeam,
    ReferralTo::AnotherService,
    ReferralTo::HomeTreatment,
    ReferralTo::AssertiveOutreach,
    ReferralTo::MhaAssessment,
];
const MISS_REASONS: &[MissReason] = &[
    MissReason::DidNotAttend,
    MissReason::NotBrought,
    MissReason::LeftBeforeSeen,
    MissReason::DischargedAgainstAdvice,
    MissReason::AssessmentRefused,
];
const PATHWAYS: &[Pathway] = &[
    Pathway::RoutineReferral,
    Pathway::InService,
    Pathway::UrgentReferral,
    Pathway::HomeTreatment,
    Pathway::ChildNotBrought,
];
/// Lists that repeat a value make it likelier: most patients are low risk, most flags
/// are false.
const RISKS: &[Risk] = &[Risk::Low, Risk::Low, Risk::High];
const FLAGS: &[bool] = &[false, false, true];
const LEGAL: &[LegalStatus] = &[
    LegalStatus::None,
    LegalStatus::MhaSection,
    LegalStatus::Mca,
    LegalStatus::CourtOrder,
    LegalStatus::ConditionalDischarge,
    LegalStatus::Cto,
];
const SAFEGUARDING: &[Safeguarding] =
    &[Safeguarding::None, Safeguarding::Adult, Safeguarding::Child, Safeguarding::Both];

/// What a generated record will say; references to other records are indexes,
/// resolved against the records made before it when the episode is built.
#[derive(Clone, Debug)]
enum Spec {
    Missed(Appointment, MissReason),
    Attended,
    /// Booked this many minutes ahead.
    Booked(u32),
    Attempt(ContactAttempt),
    Visit(HomeVisit),
    /// A card at an earlier visit (an unanswered unannounced one when there is one).
    Card(Index),
    Communication(Communication),
    Decision(Decision),
    Referral(ReferralMade),
    Mdt(MdtMeeting),
    Reengaged,
    Assessment,
    Discharged(bool),
    /// Files some earlier records.
    Filed(Vec<Index>),
    /// Enters an earlier record (not itself a correction) in error.
    Error(Index),
    /// Records a change of a fact (one of [`CHANGED_FACTS`]) to one of its values now,
    /// as every change of a fact is recorded: a history that agrees with the facts.
    FactChanged(usize, Index),
}

/// The facts whose changes the rules read: those that turn rows on, and those that
/// choose which rules apply.
const CHANGED_FACTS: &[FactField] = &[
    FactField::ImmediateRisk,
    FactField::ReferrerChildConcern,
    FactField::Children,
    FactField::Safeguarding,
    FactField::LegalStatus,
    FactField::KnownDisengager,
    FactField::ChildrensServicesInvolved,
    FactField::Risk,
    FactField::Pathway,
];

/// The values a fact holds now (more than one in a conflict).
fn values_now(facts: &Facts, field: FactField) -> Vec<FactValue> {
    match field {
        FactField::Pathway => facts.pathway.values().iter().map(|v| FactValue::Pathway(*v)).collect(),
        FactField::Risk => facts.risk.values().iter().map(|v| FactValue::Risk(*v)).collect(),
        FactField::Children => facts.children.values().iter().map(|v| FactValue::Flag(*v)).collect(),
        FactField::ReferrerChildConcern => {
            facts.referrer_child_concern.values().iter().map(|v| FactValue::Flag(*v)).collect()
        }
        FactField::ImmediateRisk => facts.immediate_risk.values().iter().map(|v| FactValue::Flag(*v)).collect(),
        FactField::KnownDisengager => facts.known_disengager.values().iter().map(|v| FactValue::Flag(*v)).collect(),
        FactField::LegalStatus => facts.legal_status.values().iter().map(|v| FactValue::LegalStatus(*v)).collect(),
        FactField::Safeguarding => facts.safeguarding.values().iter().map(|v| FactValue::Safeguarding(*v)).collect(),
        FactField::ChildrensServicesInvolved => {
            facts.childrens_services_involved.values().iter().map(|v| FactValue::Flag(*v)).collect()
        }
        FactField::CareCoordinator => {
            facts.care_coordinator.values().iter().map(|v| FactValue::User(v.clone())).collect()
        }
    }
}

/// One generated record: minutes since the previous one, what it says, and when the
/// server received it relative to `at` (minutes; sometimes more than 5 before: skew).
#[derive(Clone, Debug)]
struct Item {
    gap: u32,
    spec: Spec,
    received: Option<i64>,
    note: bool,
}

fn fact<T: Ord + Clone + std::fmt::Debug + 'static>(values: &'static [T]) -> impl Strategy<Value = Fact<T>> {
    prop_oneof![
        6 => select(values).prop_map(Fact::new),
        1 => vec(select(values), 2..=3).prop_map(|v| Fact::concurrent(v).expect("two or three values")),
    ]
}

fn facts() -> impl Strategy<Value = Facts> {
    let care_coordinator = prop_oneof![
        Just(Fact::new(None)),
        Just(Fact::new(Some("cc-1".to_string()))),
        Just(Fact::concurrent(vec![Some("cc-1".to_string()), Some("cc-2".to_string())]).expect("two values")),
    ];
    (
        fact(PATHWAYS),
        fact(RISKS),
        fact(FLAGS),
        fact(FLAGS),
        fact(FLAGS),
        fact(FLAGS),
        fact(LEGAL),
        fact(SAFEGUARDING),
        fact(FLAGS),
        care_coordinator,
    )
        .prop_map(
            |(
                pathway,
                risk,
                children,
                referrer_child_concern,
                immediate_risk,
                known_disengager,
                legal_status,
                safeguarding,
                childrens_services_involved,
                care_coordinator,
            )| Facts {
                pathway,
                risk,
                children,
                referrer_child_concern,
                immediate_risk,
                known_disengager,
                legal_status,
                safeguarding,
                childrens_services_involved,
                care_coordinator,
            },
        )
}

/// A contact attempt; `quiet`: the patient rarely answers.
fn attempt(quiet: bool) -> impl Strategy<Value = ContactAttempt> {
    let method = prop_oneof![3 => Just(Method::Phone), 2 => select(METHODS)];
    let target = prop_oneof![3 => Just(Target::Patient), 1 => Just(Target::ParentCarer), 2 => select(TARGETS)];
    let outcome = prop_oneof![
        if quiet { 1 } else { 4 } => Just(Outcome::ContactMade),
        12 => select(OUTCOMES),
    ];
    (
        method,
        target,
        outcome,
        prop::option::of(select(LETTERS)),
        prop::option::of(any::<bool>()),
        prop::option::weighted(0.8, select(DETERIORATIONS)),
        prop::option::weighted(0.8, any::<bool>()),
        0u8..10,
    )
        .prop_map(|(method, target, outcome, letter, crisis_plan, deterioration, wishes_discharge, dial)| {
            // Mostly what a device records (letters are sent; phone calls are answered
            // or not), sometimes anything the schema allows.
            let realistic = dial < 9;
            let is_letter = matches!(method, Method::Letter | Method::LetterFirstClass);
            let outcome = match (realistic, is_letter, method, outcome) {
                (true, true, _, _) => Outcome::Sent,
                (true, false, Method::Phone, Outcome::Sent) => Outcome::MessageLeft,
                (_, _, _, o) => o,
            };
            let letter = if is_letter {
                if realistic { letter.or(Some(Letter::RequestContact)) } else { letter }
            } else if realistic {
                None
            } else {
                letter
            };
            let contact = outcome == Outcome::ContactMade;
            ContactAttempt {
                method,
                target,
                outcome,
                letter,
                crisis_plan,
                deterioration: deterioration.filter(|_| contact),
                wishes_discharge: wishes_discharge.filter(|_| contact),
            }
        })
}

/// A home visit; `quiet`: the patient is rarely seen.
fn visit(quiet: bool) -> impl Strategy<Value = HomeVisit> {
    let announced = prop_oneof![3 => Just(false), 1 => Just(true)];
    let outcome = prop_oneof![if quiet { 1 } else { 4 } => Just(VisitOutcome::Seen), 8 => select(VISIT_OUTCOMES)];
    let location =
        prop::option::of((50.0..56.0f64, -5.0..2.0f64, 1.0..150.0f64).prop_map(|(lat, lon, accuracy)| Location {
            lat,
            lon,
            accuracy,
        }));
    (announced, outcome, location).prop_map(|(announced, outcome, location)| HomeVisit { announced, outcome, location })
}

fn decision() -> impl Strategy<Value = Decision> {
    (select(TOPICS), select(DECISION_OUTCOMES), select(RATIONALES)).prop_map(|(topic, outcome, rationale)| Decision {
        topic,
        outcome,
        rationale: Rationale::try_from(rationale.to_string()).expect("not empty"),
    })
}

fn referral() -> impl Strategy<Value = ReferralMade> {
    (select(REFERRALS), prop_oneof![4 => Just(false), 1 => Just(true)], any::<bool>()).prop_map(
        |(to, transfer, reason)| {
            let reason = match to {
                ReferralTo::ChildrensServices if reason => Some("neglect_of_health_needs".to_string()),
                _ if reason => Some("support".to_string()),
                _ => None,
            };
            ReferralMade { to, transfer, reason }
        },
    )
}

fn mdt() -> impl Strategy<Value = MdtMeeting> {
    let attendees = prop_oneof![
        3 => Just(vec!["senior_clinician", "team_manager", "care_coordinator"]),
        1 => Just(vec!["team_manager", "care_coordinator"]),
        1 => Just(vec!["senior_clinician"]),
    ];
    (attendees, prop_oneof![2 => Just(MdtOutcome::Continue), 1 => Just(MdtOutcome::Discharge)], any::<bool>()).prop_map(
        |(attendees, outcome, plan)| MdtMeeting {
            attendees: attendees.into_iter().map(String::from).collect(),
            outcome,
            plan: plan.then(|| "weekly cold calls; GP to review".to_string()),
        },
    )
}

/// Any record but an `entered_in_error`. `quiet`: an episode in which the patient is
/// rarely reached, so that cycles run long and the later rows of each table are raised.
fn spec(quiet: bool) -> impl Strategy<Value = Spec> {
    let contact = if quiet { 1 } else { 4 };
    prop_oneof![
        7 => (prop_oneof![Just(Appointment::Initial), Just(Appointment::FollowUp)], select(MISS_REASONS))
            .prop_map(|(a, r)| Spec::Missed(a, r)),
        contact => Just(Spec::Attended),
        2 => (60u32..20_160).prop_map(Spec::Booked),
        12 => attempt(quiet).prop_map(Spec::Attempt),
        4 => visit(quiet).prop_map(Spec::Visit),
        3 => any::<Index>().prop_map(Spec::Card),
        8 => (select(PARTIES), select(CHANNELS)).prop_map(|(party, channel)| Spec::Communication(Communication { party, channel })),
        7 => decision().prop_map(Spec::Decision),
        2 => referral().prop_map(Spec::Referral),
        2 => mdt().prop_map(Spec::Mdt),
        contact => Just(Spec::Reengaged),
        1 => Just(Spec::Assessment),
        1 => any::<bool>().prop_map(Spec::Discharged),
        3 => vec(any::<Index>(), 1..5).prop_map(Spec::Filed),
    ]
}

/// A record that closes a cycle: a contact of every kind, or a discharge.
fn closer() -> impl Strategy<Value = Spec> {
    let attempt = (
        prop_oneof![Just(Method::Phone), Just(Method::Sms), Just(Method::Email)],
        prop_oneof![Just(Target::Patient), Just(Target::ParentCarer)],
        prop::option::of(select(DETERIORATIONS)),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(method, target, deterioration, wishes_discharge)| {
            Spec::Attempt(ContactAttempt {
                method,
                target,
                outcome: Outcome::ContactMade,
                letter: None,
                crisis_plan: None,
                deterioration,
                wishes_discharge,
            })
        });
    prop_oneof![
        3 => attempt,
        1 => Just(Spec::Attended),
        1 => Just(Spec::Reengaged),
        1 => Just(Spec::Visit(HomeVisit { announced: false, outcome: VisitOutcome::Seen, location: None })),
        1 => any::<bool>().prop_map(Spec::Discharged),
    ]
}

/// Minutes between records: sometimes the same minute (the order is then the ids'),
/// often the same hour, sometimes days.
fn gap() -> impl Strategy<Value = u32> {
    prop_oneof![1 => Just(0u32), 4 => 0u32..180, 2 => 180u32..1440, 2 => 1440u32..7200]
}

fn item(quiet: bool) -> impl Strategy<Value = Item> {
    let spec = prop_oneof![
        40 => spec(quiet),
        1 => any::<Index>().prop_map(Spec::Error),
        2 => (0..CHANGED_FACTS.len(), any::<Index>()).prop_map(|(field, value)| Spec::FactChanged(field, value)),
    ];
    let received = prop_oneof![3 => Just(None), 2 => (-15i64..240).prop_map(Some)];
    (gap(), spec, received, prop::bool::weighted(0.2)).prop_map(|(gap, spec, received, note)| Item {
        gap,
        spec,
        received,
        note,
    })
}

/// What a record says, resolving its references against the records before it (and a
/// fact's change against the facts); `None` when it names a record and there is none
/// to name.
fn body(spec: &Spec, at: Timestamp, earlier: &[Event], facts: &Facts) -> Option<EventBody> {
    Some(match spec {
        Spec::Missed(appointment, reason) => {
            EventBody::AppointmentMissed(AppointmentMissed { appointment: *appointment, reason: *reason })
        }
        Spec::Attended => EventBody::AppointmentAttended(Empty {}),
        Spec::Booked(ahead) => {
            EventBody::AppointmentBooked(AppointmentBooked { r#for: plus_minutes(at, i64::from(*ahead)) })
        }
        Spec::Attempt(a) => EventBody::ContactAttempt(a.clone()),
        Spec::Visit(v) => EventBody::HomeVisit(v.clone()),
        Spec::Card(which) => {
            let visits: Vec<&Event> = earlier.iter().filter(|e| matches!(e.body, EventBody::HomeVisit(_))).collect();
            let unanswered: Vec<&Event> = visits
                .iter()
                .copied()
                .filter(|e| {
                    matches!(&e.body, EventBody::HomeVisit(v)
                    if !v.announced && matches!(v.outcome, VisitOutcome::NoAnswer | VisitOutcome::NotAtAddress))
                })
                .collect();
            let pool = if unanswered.is_empty() { visits } else { unanswered };
            if pool.is_empty() {
                return None;
            }
            EventBody::CallingCardLeft(CallingCardLeft { visit: which.get(&pool).id })
        }
        Spec::Communication(c) => EventBody::Communication(c.clone()),
        Spec::Decision(d) => EventBody::Decision(d.clone()),
        Spec::Referral(r) => EventBody::ReferralMade(r.clone()),
        Spec::Mdt(m) => EventBody::MdtMeeting(m.clone()),
        Spec::Reengaged => EventBody::Reengaged(Empty {}),
        Spec::Assessment => EventBody::AssessmentCompleted(Empty {}),
        Spec::Discharged(crisis_plan_sent) => EventBody::Discharged(Discharged { crisis_plan_sent: *crisis_plan_sent }),
        Spec::Filed(which) => {
            let pool: Vec<&Event> = earlier.iter().filter(|e| !matches!(e.body, EventBody::FiledToEpr(_))).collect();
            if pool.is_empty() {
                return None;
            }
            let mut records: Vec<EventId> = Vec::new();
            for w in which {
                let id = w.get(&pool).id;
                if !records.contains(&id) {
                    records.push(id);
                }
            }
            EventBody::FiledToEpr(FiledToEpr { records, epr_ref: format!("EPR-{}", earlier.len()) })
        }
        Spec::FactChanged(field, which) => {
            let field = CHANGED_FACTS[*field];
            let value = which.get(&values_now(facts, field)).clone();
            EventBody::FactChanged(FactChanged { field, value })
        }
        Spec::Error(which) => {
            let pool: Vec<&Event> =
                earlier.iter().filter(|e| !matches!(e.body, EventBody::EnteredInError(_))).collect();
            if pool.is_empty() {
                return None;
            }
            EventBody::EnteredInError(EnteredInError {
                record: which.get(&pool).id,
                reason: "wrong patient".to_string(),
            })
        }
    })
}

fn event(n: u64, at: Timestamp, body: EventBody, received: Option<i64>, note: bool) -> Event {
    Event {
        id: event_id(n).into(),
        at,
        by: format!("user-{}", n % 3),
        device: format!("device-{}", n % 2),
        body,
        note: note.then(|| "left a message with the receptionist".to_string()),
        received_at: received.map(|r| plus_minutes(at, r)),
    }
}

fn build(facts: Facts, opened_before: u32, items: Vec<Item>) -> Episode {
    let mut events: Vec<Event> = Vec::with_capacity(items.len());
    let mut at = base();
    for (n, item) in (0u64..).zip(items) {
        at = plus_minutes(at, i64::from(item.gap));
        if let Some(body) = body(&item.spec, at, &events, &facts) {
            events.push(event(n, at, body, item.received, item.note));
        }
    }
    Episode {
        id: Uuid::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0001).into(),
        patient_ref: PatientRef::new("TEST-0001").expect("not empty"),
        team: "north".to_string(),
        opened_at: plus_minutes(base(), -i64::from(opened_before)),
        opened_by: "user-0".to_string(),
        facts,
        plan: String::new(),
        events,
        invalid_records: Vec::new(),
    }
}

fn episode_strategy() -> impl Strategy<Value = Episode> {
    episodes(40)
}

/// Episodes of fewer than `max` records, some of them quiet.
fn episodes(max: usize) -> impl Strategy<Value = Episode> {
    let items = prop_oneof![vec(item(false), 0..max), vec(item(true), 0..max)];
    (facts(), 0u32..4320, items).prop_map(|(facts, opened_before, items)| build(facts, opened_before, items))
}

/// A `now` anywhere from the start to about ten weeks on (before, among or after the
/// records).
fn now_strategy() -> impl Strategy<Value = Timestamp> {
    (0i64..70 * 1440).prop_map(|m| plus_minutes(base(), m))
}

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

fn last_at(episode: &Episode) -> Timestamp {
    episode.events.iter().map(|e| e.at).max().unwrap_or(base()).max(episode.opened_at)
}

/// Every record id that another record names.
fn referenced(episode: &Episode) -> HashSet<EventId> {
    let mut named = HashSet::new();
    for e in &episode.events {
        match &e.body {
            EventBody::CallingCardLeft(c) => {
                named.insert(c.visit);
            }
            EventBody::FiledToEpr(f) => named.extend(f.records.iter().copied()),
            EventBody::EnteredInError(eie) => {
                named.insert(eie.record);
            }
            _ => {}
        }
    }
    named
}

fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let j = ((seed >> 33) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// The episode as JSON, one record a line: a counterexample that `tether pathway
/// evaluate` can read.
fn describe(episode: &Episode) -> String {
    let mut json = episode.to_json();
    let mut out = String::new();
    if let Some(obj) = json.as_object_mut() {
        obj.remove("events");
        let _ = writeln!(out, "episode: {json}");
    }
    for e in &episode.events {
        let _ = writeln!(out, "  {}", serde_json::to_string(e).unwrap_or_default());
    }
    out
}

/// What differs between two evaluations, by action id.
fn diff(a: &Evaluation, b: &Evaluation) -> String {
    let mut out = String::new();
    let a_by_id: HashMap<Uuid, _> = a.actions.iter().map(|x| (x.id, x)).collect();
    let b_by_id: HashMap<Uuid, _> = b.actions.iter().map(|x| (x.id, x)).collect();
    for x in &a.actions {
        match b_by_id.get(&x.id) {
            None => {
                let _ = writeln!(out, "only in the first:  {x:?}");
            }
            Some(y) if *y != x => {
                let _ = writeln!(out, "first:  {x:?}\nsecond: {y:?}");
            }
            Some(_) => {}
        }
    }
    for y in &b.actions {
        if !a_by_id.contains_key(&y.id) {
            let _ = writeln!(out, "only in the second: {y:?}");
        }
    }
    if a.actions.iter().map(|x| x.id).collect::<Vec<_>>() != b.actions.iter().map(|x| x.id).collect::<Vec<_>>() {
        let _ = writeln!(out, "(the actions are in a different order)");
    }
    if a.warnings != b.warnings {
        let _ = writeln!(out, "warnings differ:\n  {:?}\n  {:?}", a.warnings, b.warnings);
    }
    out
}

fn config() -> ProptestConfig {
    // No regression files: this suite must write nothing into the source tree.
    // PROPTEST_CASES asks for more (or fewer) cases than the 256 run by default.
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Same input, same output: evaluating twice (and a copy) gives equal evaluations.
    #[test]
    fn evaluation_is_deterministic(episode in episode_strategy(), now in now_strategy()) {
        let calendar = Calendar::default();
        let first = evaluate(&episode, now, &calendar);
        let second = evaluate(&episode, now, &calendar);
        let copy = evaluate(&episode.clone(), now, &Calendar::default());
        prop_assert!(first == second, "now {now}\n{}{}", describe(&episode), diff(&first, &second));
        prop_assert!(first == copy, "now {now}\n{}{}", describe(&episode), diff(&first, &copy));
        // Every action has its own id (the engine's debug assertion says the same, but
        // the long run is optimised).
        let mut ids: Vec<Uuid> = first.actions.iter().map(|a| a.id).collect();
        ids.sort_unstable();
        let twice: Vec<String> = ids
            .windows(2)
            .filter(|w| w[0] == w[1])
            .flat_map(|w| first.actions.iter().filter(move |a| a.id == w[0]).map(|a| format!("{a:?}")))
            .collect();
        prop_assert!(twice.is_empty(), "now {now}\n{}two actions share an id:\n{}", describe(&episode), twice.join("\n"));
    }

    /// The order of the records in the input never changes the output.
    #[test]
    fn event_order_never_changes_the_evaluation(episode in episode_strategy(), now in now_strategy(), seed in any::<u64>()) {
        let calendar = Calendar::default();
        let mut shuffled = episode.clone();
        shuffle(&mut shuffled.events, seed);
        let mut reversed = episode.clone();
        reversed.events.reverse();
        let expected = evaluate(&episode, now, &calendar);
        let got = evaluate(&shuffled, now, &calendar);
        prop_assert!(expected == got, "now {now}, seed {seed}\n{}{}", describe(&episode), diff(&expected, &got));
        let got = evaluate(&reversed, now, &calendar);
        prop_assert!(expected == got, "now {now}, reversed\n{}{}", describe(&episode), diff(&expected, &got));
    }

    /// `entered_in_error` restores the state as if the record had never been made: for a
    /// record X that no other record names (no card names it, no filing lists it, no
    /// correction names it) and that is not itself a correction, the episode with an
    /// `entered_in_error` naming X, made after every record, evaluates exactly as the
    /// episode without X. (The correction raises no `file_to_epr` of its own: X was
    /// never filed.)
    #[test]
    fn entered_in_error_restores_the_state_without_the_record(
        episode in episode_strategy(),
        which in any::<Index>(),
        after in 1i64..2880,
        now in now_strategy(),
        later in 0i64..7 * 1440,
    ) {
        let named = referenced(&episode);
        let candidates: Vec<&Event> = episode
            .events
            .iter()
            .filter(|e| !named.contains(&e.id) && !matches!(e.body, EventBody::EnteredInError(_)))
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let x = which.get(&candidates).id;
        let at = plus_minutes(last_at(&episode), after);
        let mut corrected = episode.clone();
        corrected.events.push(event(
            10_000,
            at,
            EventBody::EnteredInError(EnteredInError { record: x, reason: "recorded against the wrong patient".to_string() }),
            None,
            false,
        ));
        let mut without = episode.clone();
        without.events.retain(|e| e.id != x);

        let calendar = Calendar::default();
        for now in [now, plus_minutes(at, later)] {
            let with_correction = evaluate(&corrected, now, &calendar);
            let never_made = evaluate(&without, now, &calendar);
            prop_assert!(
                with_correction == never_made,
                "X = {x}, correction at {at}, now {now}\n{}first: with the correction; second: without X\n{}",
                describe(&episode),
                diff(&with_correction, &never_made),
            );
        }
    }

    /// A later `now` never un-does or revives an action: one that is done or cancelled
    /// at N is so, the same way, at any later N'.
    #[test]
    fn done_and_cancelled_stay_so_at_a_later_now(
        episode in episode_strategy(),
        now in now_strategy(),
        later in 1i64..30 * 1440,
    ) {
        let calendar = Calendar::default();
        let first = evaluate(&episode, now, &calendar);
        let now_later = plus_minutes(now, later);
        let second = evaluate(&episode, now_later, &calendar);
        let by_id: HashMap<Uuid, _> = second.actions.iter().map(|a| (a.id, a)).collect();
        let mut changed = String::new();
        for settled in first.actions.iter().filter(|a| matches!(a.state, State::Done | State::Cancelled)) {
            match by_id.get(&settled.id) {
                Some(a) if a.state == settled.state && a.resolved_by == settled.resolved_by => {}
                Some(a) => {
                    let _ = writeln!(changed, "at {now}:  {settled:?}\nat {now_later}: {a:?}");
                }
                None => {
                    let _ = writeln!(changed, "at {now}:  {settled:?}\nat {now_later}: (gone)");
                }
            }
        }
        prop_assert!(changed.is_empty(), "{}{changed}", describe(&episode));
    }
}

proptest! {
    // More cases than the others: the counterexamples below needed a record added
    // inside a rule's window, which about one case in a thousand gives; the two
    // regression tests below pin them.
    #![proptest_config(ProptestConfig { cases: config().cases.max(1024), ..config() })]

    /// Adding an unrelated record never un-does an action: an action done at one
    /// evaluation is, after one more record of any kind but `entered_in_error` (made
    /// after every record) and at a later `now`, still there, still done, and done by
    /// the same record.
    #[test]
    fn done_stays_done_when_a_record_is_added(
        // Short episodes too: the record added then often falls inside a rule's window.
        episode in prop_oneof![episode_strategy(), episodes(12)],
        wait in 0i64..3 * 1440,
        spec in prop_oneof![3 => spec(false), 1 => closer()],
        after in prop_oneof![1i64..240, 1i64..3 * 1440],
        later in 0i64..3 * 1440,
    ) {
        let calendar = Calendar::default();
        let last = last_at(&episode);
        let now = plus_minutes(last, wait);
        let before = evaluate(&episode, now, &calendar);

        let at = plus_minutes(last, after);
        let Some(body) = body(&spec, at, &episode.events, &episode.facts) else { return Ok(()) };
        let mut more = episode.clone();
        more.events.push(event(10_000, at, body, None, false));
        let now_after = plus_minutes(now.max(at), later);
        let after_eval = evaluate(&more, now_after, &calendar);

        let by_id: HashMap<Uuid, _> = after_eval.actions.iter().map(|a| (a.id, a)).collect();
        let mut undone = String::new();
        for done in before.actions.iter().filter(|a| a.state == State::Done) {
            match by_id.get(&done.id) {
                Some(a) if a.state == State::Done && a.resolved_by == done.resolved_by => {}
                Some(a) => {
                    let _ = writeln!(undone, "was:    {done:?}\nbecame: {a:?}");
                }
                None => {
                    let _ = writeln!(undone, "was:    {done:?}\nbecame: (gone)");
                }
            }
        }
        prop_assert!(
            undone.is_empty(),
            "now {now}; added at {at}: {}\nevaluated again at {now_after}\n{}{undone}",
            serde_json::to_string(&more.events[more.events.len() - 1]).unwrap_or_default(),
            describe(&episode),
        );
    }
}

// ---------------------------------------------------------------------------------
// Regressions: the two counterexamples `done_stays_done_when_a_record_is_added` found
// against the engine of commit 1787c9b, shrunk (fixed in 6e562db)
// ---------------------------------------------------------------------------------

fn facts_for(pathway: Pathway) -> Facts {
    Facts { pathway: Fact::new(pathway), ..Facts::default() }
}

fn items(specs: Vec<(u32, Spec)>) -> Vec<Item> {
    specs.into_iter().map(|(gap, spec)| Item { gap, spec, received: None, note: false }).collect()
}

/// Evaluates `episode` at `now`, then with `added` made at `at` and at `later`, and
/// returns what became of each action that was done.
fn undone_by(episode: &Episode, now: Timestamp, added: EventBody, at: Timestamp, later: Timestamp) -> Vec<String> {
    let calendar = Calendar::default();
    let before = evaluate(episode, now, &calendar);
    let mut more = episode.clone();
    more.events.push(event(10_000, at, added, None, false));
    let after = evaluate(&more, later, &calendar);
    before
        .actions
        .iter()
        .filter(|a| a.state == State::Done)
        .filter_map(|done| match after.actions.iter().find(|a| a.id == done.id) {
            Some(a) if a.state == State::Done && a.resolved_by == done.resolved_by => None,
            Some(a) => Some(format!("{} became {:?}", done.code, a.state)),
            None => Some(format!("{} is gone", done.code)),
        })
        .collect()
}

/// 5.1.1: an initial appointment missed at 08:00 and the referrer told at 08:00; at
/// 08:00 `notify_referrer` (active from T + 24 h) is done by that communication. The
/// patient re-engages at 08:01: it must stay done. (It became `cancelled`: the cycle
/// closed before `active_from`, so the engine took it as never active. The same went
/// for `notify_gp`, `notify_other_agencies`, `agree_joint_plan` and
/// `consider_mha_assessment` done before T + 24 h, with a `discharged` or any contact
/// in place of the `reengaged`.)
#[test]
fn contact_before_active_from_undoes_a_done_notification() {
    let episode = build(
        facts_for(Pathway::UrgentReferral),
        0,
        items(vec![
            (0, Spec::Missed(Appointment::Initial, MissReason::DidNotAttend)),
            (0, Spec::Communication(Communication { party: Party::Referrer, channel: Channel::Phone })),
        ]),
    );
    let now = base();
    let at = plus_minutes(base(), 1);
    let undone = undone_by(&episode, now, EventBody::Reengaged(Empty {}), at, at);
    assert!(undone.is_empty(), "{}{}", describe(&episode), undone.join("\n"));
}

/// 5.3 with `known_disengager`: two follow-ups missed (08:00, 09:00), a discharge
/// warning letter to the patient (10:00), a quorate MDT (11:00). `arrange_mdt` from the
/// letter (active from letter + 21 days) is done by the MDT. A family contact attempt at
/// 12:00 raises `arrange_mdt` from the attempt (5.7) with an earlier deadline: the done
/// action must stay. (It was gone: "one action per code per cycle, the earlier
/// deadline" kept the new one, open, in its place.)
#[test]
fn later_trigger_replaces_a_done_arrange_mdt() {
    let mut facts = facts_for(Pathway::InService);
    facts.known_disengager = Fact::new(true);
    let letter = ContactAttempt {
        method: Method::Letter,
        target: Target::Patient,
        outcome: Outcome::Sent,
        letter: Some(Letter::DischargeWarning),
        crisis_plan: None,
        deterioration: None,
        wishes_discharge: None,
    };
    let mdt = MdtMeeting {
        attendees: vec!["senior_clinician".to_string(), "team_manager".to_string()],
        outcome: MdtOutcome::Continue,
        plan: None,
    };
    let episode = build(
        facts,
        0,
        items(vec![
            (0, Spec::Missed(Appointment::FollowUp, MissReason::DidNotAttend)),
            (60, Spec::Missed(Appointment::FollowUp, MissReason::DidNotAttend)),
            (60, Spec::Attempt(letter)),
            (60, Spec::Mdt(mdt)),
        ]),
    );
    let family = ContactAttempt {
        method: Method::Phone,
        target: Target::FamilyCarer,
        outcome: Outcome::NoAnswer,
        letter: None,
        crisis_plan: None,
        deterioration: None,
        wishes_discharge: None,
    };
    let now = plus_minutes(base(), 180);
    let at = plus_minutes(base(), 240);
    let undone = undone_by(&episode, now, EventBody::ContactAttempt(family), at, at);
    assert!(undone.is_empty(), "{}{}", describe(&episode), undone.join("\n"));
}

// ---------------------------------------------------------------------------------
// Regression: the counterexample that `evaluation_is_deterministic` and
// `event_order_never_changes_the_evaluation` found against the engine of commit 6d282b7
// (the debug assertion "two rows raised the same code from the same record outside a
// cycle", about once in 10,000 to 100,000 cases), shrunk; fixed in 52d515c
// ---------------------------------------------------------------------------------

/// Home treatment: a failed call at 08:00 (T of the first cycle); at 08:01 an
/// unannounced visit that sees the patient (closing it), the service manager told, and
/// another failed call (T of the second). The one communication does both cycles'
/// escalations, so both raise `arrange_mdt` from it: one action, one id, whatever the
/// order of the records. (Two actions shared the id: the rows were merged per cycle
/// only.) The three missed appointments are the shrunk case's, kept as found.
#[test]
fn one_escalation_doing_two_cycles_escalations_raises_one_mdt_in_any_order() {
    let missed = || Spec::Missed(Appointment::Initial, MissReason::DidNotAttend);
    let call = |outcome| {
        Spec::Attempt(ContactAttempt {
            method: Method::Phone,
            target: Target::Patient,
            outcome,
            letter: None,
            crisis_plan: None,
            deterioration: None,
            wishes_discharge: None,
        })
    };
    let episode = build(
        facts_for(Pathway::HomeTreatment),
        0,
        items(vec![
            (0, missed()),
            (0, missed()),
            (0, missed()),
            (0, call(Outcome::WrongNumber)),
            (1, Spec::Visit(HomeVisit { announced: false, outcome: VisitOutcome::Seen, location: None })),
            (0, call(Outcome::NoAnswer)),
            (0, Spec::Communication(Communication { party: Party::ServiceManager, channel: Channel::Phone })),
        ]),
    );
    let calendar = Calendar::default();
    for now in [base(), plus_minutes(base(), 1), plus_minutes(base(), 3 * 1440)] {
        let expected = evaluate(&episode, now, &calendar);
        let mdts: Vec<_> = expected.actions.iter().filter(|a| a.code == pathway::Code::ArrangeMdt).collect();
        assert_eq!(mdts.len(), 1, "{}{mdts:#?}", describe(&episode));
        let mut ids: Vec<Uuid> = expected.actions.iter().map(|a| a.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), expected.actions.len(), "every action has its own id");
        for seed in 0..20 {
            let mut shuffled = episode.clone();
            shuffle(&mut shuffled.events, seed);
            let got = evaluate(&shuffled, now, &calendar);
            assert!(expected == got, "now {now}, seed {seed}\n{}{}", describe(&episode), diff(&expected, &got));
        }
    }
}
