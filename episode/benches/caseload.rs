//! A trust's whole caseload, evaluated once: 10,000 episodes of 50 records each.
//!
//! The caseload is built deterministically (a seeded linear congruential generator, no
//! `rand`), with a realistic mix per pathway: missed appointments, failed calls,
//! letters, unannounced visits with calling cards, communications, decisions, filings
//! and the occasional contact. One iteration evaluates every episode at the same `now`,
//! as the server does when it builds the worklists. The goal is under 100 ms.
//!
//! Run with `cargo bench -p episode --bench caseload`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use episode::pathway::{Calendar, State, evaluate};
use episode::*;
use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

const EPISODES: usize = 10_000;
const EVENTS_PER_EPISODE: usize = 50;

/// Knuth's MMIX linear congruential generator: the same caseload on every machine.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

fn plus_minutes(at: Timestamp, minutes: i64) -> Timestamp {
    at.checked_add(SignedDuration::from_mins(minutes)).expect("within jiff's range")
}

fn attempt(method: Method, target: Target, outcome: Outcome, letter: Option<Letter>) -> EventBody {
    EventBody::ContactAttempt(ContactAttempt {
        method,
        target,
        outcome,
        letter,
        crisis_plan: None,
        deterioration: None,
        wishes_discharge: None,
    })
}

fn decision(topic: Topic) -> EventBody {
    EventBody::Decision(Decision {
        topic,
        outcome: DecisionOutcome::Yes,
        rationale: Rationale::try_from("discussed with the team manager".to_string()).expect("not empty"),
    })
}

fn communication(party: Party, channel: Channel) -> EventBody {
    EventBody::Communication(Communication { party, channel })
}

/// One episode: its pathway and facts, then 50 records of what a team does while the
/// patient stays out of reach, with now and then a contact.
fn episode(rng: &mut Lcg, index: usize, start: Timestamp) -> Episode {
    let pathway = match rng.below(100) {
        0..40 => Pathway::InService,
        40..55 => Pathway::RoutineReferral,
        55..70 => Pathway::UrgentReferral,
        70..85 => Pathway::HomeTreatment,
        _ => Pathway::ChildNotBrought,
    };
    let flag = |rng: &mut Lcg, percent| Fact::new(rng.chance(percent));
    let facts = Facts {
        pathway: if rng.chance(2) {
            Fact::concurrent(vec![pathway, Pathway::UrgentReferral]).expect("two values")
        } else {
            Fact::new(pathway)
        },
        risk: Fact::new(if rng.chance(30) { Risk::High } else { Risk::Low }),
        children: flag(rng, 25),
        referrer_child_concern: flag(rng, 5),
        immediate_risk: flag(rng, 5),
        known_disengager: flag(rng, 15),
        legal_status: Fact::new(if rng.chance(10) { LegalStatus::Cto } else { LegalStatus::None }),
        safeguarding: Fact::new(if rng.chance(10) { Safeguarding::Child } else { Safeguarding::None }),
        childrens_services_involved: flag(rng, 20),
        care_coordinator: Fact::new(Some(format!("cc-{}", index % 40))),
    };

    let child = pathway == Pathway::ChildNotBrought;
    let who = if child { Target::ParentCarer } else { Target::Patient };
    let miss = match pathway {
        Pathway::RoutineReferral | Pathway::UrgentReferral => Appointment::Initial,
        _ => Appointment::FollowUp,
    };
    // Home treatment moves in hours; the others in hours to days.
    let (short, long) = if pathway == Pathway::HomeTreatment { (20, 240) } else { (60, 1800) };

    let mut events: Vec<Event> = Vec::with_capacity(EVENTS_PER_EPISODE + 8);
    let mut at = start;
    let mut unfiled: Vec<EventId> = Vec::new();
    let mut next_id = (index as u128) << 32;
    let mut push = |events: &mut Vec<Event>, at: Timestamp, body: EventBody| {
        next_id += 1;
        let id = EventId::from_uuid(Uuid::from_u128(next_id));
        events.push(Event {
            id,
            at,
            by: "user-1".to_string(),
            device: "phone-1".to_string(),
            body,
            note: None,
            received_at: Some(plus_minutes(at, 3)),
        });
        id
    };

    while events.len() < EVENTS_PER_EPISODE {
        at = plus_minutes(at, (short + rng.below(long)) as i64);
        let roll = rng.below(100);
        let body = match roll {
            0..12 => EventBody::AppointmentMissed(AppointmentMissed {
                appointment: miss,
                reason: if child { MissReason::NotBrought } else { MissReason::DidNotAttend },
            }),
            12..30 => attempt(
                Method::Phone,
                if rng.chance(80) { who } else { Target::FamilyCarer },
                rng.pick(&[Outcome::NoAnswer, Outcome::MessageLeft, Outcome::WrongNumber, Outcome::Declined]),
                None,
            ),
            30..36 => attempt(Method::Sms, who, Outcome::Sent, None),
            36..44 => {
                let letter = match pathway {
                    Pathway::ChildNotBrought => Letter::WasNotBrought,
                    Pathway::InService if rng.chance(40) => Letter::DischargeWarning,
                    _ => Letter::RequestContact,
                };
                attempt(Method::LetterFirstClass, who, Outcome::Sent, Some(letter))
            }
            44..52 => {
                let outcome = rng.pick(&[
                    VisitOutcome::NoAnswer,
                    VisitOutcome::NoAnswer,
                    VisitOutcome::NotAtAddress,
                    VisitOutcome::AccessRefused,
                ]);
                let visit = EventBody::HomeVisit(HomeVisit { announced: false, outcome, location: None });
                let id = push(&mut events, at, visit);
                unfiled.push(id);
                if outcome != VisitOutcome::AccessRefused && rng.chance(80) {
                    at = plus_minutes(at, 5 + rng.below(50) as i64);
                    EventBody::CallingCardLeft(CallingCardLeft { visit: id })
                } else {
                    continue;
                }
            }
            52..68 => {
                let party = match pathway {
                    Pathway::ChildNotBrought => {
                        rng.pick(&[Party::ChildrensServices, Party::HealthVisitor, Party::SchoolNurse, Party::Gp])
                    }
                    Pathway::HomeTreatment => {
                        rng.pick(&[Party::TeamManager, Party::OnCallManager, Party::Police, Party::Gp])
                    }
                    _ => rng.pick(&[
                        Party::Referrer,
                        Party::Gp,
                        Party::OtherAgency,
                        Party::TeamManager,
                        Party::FamilyCarer,
                        Party::SafeguardingNurse,
                    ]),
                };
                communication(party, rng.pick(&[Channel::Phone, Channel::Writing, Channel::Electronic]))
            }
            68..78 => decision(match pathway {
                Pathway::ChildNotBrought => rng.pick(&[Topic::ImpactOnChild, Topic::ChildrensServicesKnown]),
                Pathway::HomeTreatment => rng.pick(&[Topic::PoliceSupport, Topic::MhaAssessment, Topic::Recall]),
                _ => rng.pick(&[
                    Topic::FamilyContact,
                    Topic::ColdCall,
                    Topic::JointPlan,
                    Topic::MhaAssessment,
                    Topic::OtherAgencies,
                ]),
            }),
            78..82 => match rng.below(4) {
                0 => EventBody::AppointmentAttended(Empty {}),
                1 => EventBody::Reengaged(Empty {}),
                2 => EventBody::HomeVisit(HomeVisit {
                    announced: rng.chance(50),
                    outcome: VisitOutcome::Seen,
                    location: None,
                }),
                _ => EventBody::ContactAttempt(ContactAttempt {
                    method: Method::Phone,
                    target: who,
                    outcome: Outcome::ContactMade,
                    letter: None,
                    crisis_plan: None,
                    deterioration: Some(rng.pick(&[Deterioration::None, Deterioration::Suspected])),
                    wishes_discharge: Some(rng.chance(20)),
                }),
            },
            82..84 => EventBody::AppointmentBooked(AppointmentBooked { r#for: plus_minutes(at, 7 * 1440) }),
            84..86 => EventBody::MdtMeeting(MdtMeeting {
                attendees: vec!["senior_clinician".to_string(), "team_manager".to_string()],
                outcome: if rng.chance(20) { MdtOutcome::Discharge } else { MdtOutcome::Continue },
                plan: None,
            }),
            86..88 => EventBody::ReferralMade(ReferralMade {
                to: if child { ReferralTo::ChildrensServices } else { ReferralTo::HomeTreatment },
                transfer: false,
                reason: child.then(|| "neglect_of_health_needs".to_string()),
            }),
            88..89 => EventBody::AssessmentCompleted(Empty {}),
            _ if !unfiled.is_empty() => {
                // The team base files what has come in since the last filing.
                EventBody::FiledToEpr(FiledToEpr {
                    records: std::mem::take(&mut unfiled),
                    epr_ref: format!("EPR-{index}"),
                })
            }
            _ => continue,
        };
        let filing = matches!(body, EventBody::FiledToEpr(_));
        let id = push(&mut events, at, body);
        if !filing {
            unfiled.push(id);
        }
    }
    events.truncate(EVENTS_PER_EPISODE);

    Episode {
        id: Uuid::from_u128(((index as u128) << 32) | 0xffff_ffff).into(),
        patient_ref: PatientRef::new(format!("P{index:06}")).expect("not empty"),
        team: format!("team-{}", index % 12),
        opened_at: start,
        opened_by: "user-1".to_string(),
        facts,
        plan: String::new(),
        events,
        invalid_records: Vec::new(),
    }
}

/// The caseload, and the `now` it is evaluated at: an hour after its last record.
fn caseload() -> (Vec<Episode>, Timestamp) {
    let base: Timestamp = "2026-03-02T08:00:00Z".parse().expect("a valid time");
    let mut rng = Lcg(0x7e7e_2026);
    let episodes: Vec<Episode> = (0..EPISODES)
        .map(|i| {
            let start = plus_minutes(base, rng.below(30 * 1440) as i64);
            episode(&mut rng, i, start)
        })
        .collect();
    let last = episodes.iter().flat_map(|e| e.events.iter().map(|r| r.at)).max().unwrap_or(base);
    (episodes, plus_minutes(last, 60))
}

fn bench(c: &mut Criterion) {
    let calendar = Calendar::default();
    let (episodes, now) = caseload();

    // Once, so the work is visibly real.
    let evaluations: Vec<_> = episodes.iter().map(|e| evaluate(e, now, &calendar)).collect();
    let actions: usize = evaluations.iter().map(|e| e.actions.len()).sum();
    let count = |state: State| evaluations.iter().flat_map(|e| &e.actions).filter(|a| a.state == state).count();
    let events: usize = episodes.iter().map(|e| e.events.len()).sum();
    println!(
        "caseload: {} episodes, {events} records, {actions} actions at {now} (open {}, overdue {}, done {}, cancelled {}, upcoming {})",
        episodes.len(),
        count(State::Open),
        count(State::Overdue),
        count(State::Done),
        count(State::Cancelled),
        count(State::Upcoming),
    );

    let mut group = c.benchmark_group("caseload");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(15));
    group.bench_function("evaluate_10000_episodes", |b| {
        b.iter(|| {
            let mut actions = 0;
            for episode in &episodes {
                actions += black_box(evaluate(black_box(episode), black_box(now), &calendar)).actions.len();
            }
            actions
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
