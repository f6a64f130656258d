//! The episode model as UniFFI types: records and enums that Kotlin, Swift and Python
//! see as their own data classes, structs and enums.
//!
//! Each enum mirrors one of `episode::model` or `episode::pathway` value for value, with
//! the same snake_case names in serde, so that one generic [`mirror`] converts between
//! the two (a test converts every value both ways). Records, which the rules validate,
//! cross into the core as the episode JSON the core already checks: the core stays the
//! only place that decides what a valid record is.

use std::time::SystemTime;

use episode::pathway;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::TetherError;

/// Converts between an enum here and its twin in `episode` through their shared serde
/// names.
pub(crate) fn mirror<A: Serialize, B: DeserializeOwned>(value: &A) -> Result<B, TetherError> {
    let json = serde_json::to_value(value).map_err(|e| TetherError::other(format!("a value did not convert: {e}")))?;
    serde_json::from_value(json).map_err(|e| TetherError::other(format!("a value did not convert: {e}")))
}

/// A time the core holds, as the host's.
pub(crate) fn system_time(ts: jiff::Timestamp) -> Result<SystemTime, TetherError> {
    SystemTime::try_from(ts).map_err(|_| TetherError::other("a time is out of this platform's range"))
}

/// Times cross as RFC 3339 text inside the JSON that the core reads.
mod time {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        let ts = jiff::Timestamp::try_from(*time).map_err(serde::ser::Error::custom)?;
        serializer.collect_str(&ts)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        let ts: jiff::Timestamp = text.parse().map_err(serde::de::Error::custom)?;
        SystemTime::try_from(ts).map_err(serde::de::Error::custom)
    }
}

/// Declares fieldless enums that mirror `episode`'s, deriving what every one needs.
macro_rules! mirrored {
    ($($(#[$meta:meta])* $name:ident { $($variant:ident),* $(,)? })*) => {
        $(
            $(#[$meta])*
            #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, uniffi::Enum)]
            #[serde(rename_all = "snake_case")]
            pub enum $name {
                $($variant,)*
            }
        )*
    };
}

mirrored! {
    /// Which part of the policy an episode follows.
    Pathway { RoutineReferral, InService, UrgentReferral, HomeTreatment, ChildNotBrought }
    Risk { Low, High }
    LegalStatus { None, MhaSection, Mca, CourtOrder, ConditionalDischarge, Cto }
    Safeguarding { None, Adult, Child, Both }
    /// The name of a fact.
    FactField {
        Pathway, Risk, Children, ReferrerChildConcern, ImmediateRisk, KnownDisengager, LegalStatus,
        Safeguarding, ChildrensServicesInvolved, CareCoordinator,
    }
    Appointment { Initial, FollowUp }
    MissReason { DidNotAttend, NotBrought, LeftBeforeSeen, DischargedAgainstAdvice, AssessmentRefused }
    /// How a contact was attempted.
    Method { Phone, Sms, Email, Letter, LetterFirstClass }
    Target { Patient, FamilyCarer, NamedContact, Associate, OtherProvider, ParentCarer }
    /// The outcome of a contact attempt.
    ContactOutcome { NoAnswer, MessageLeft, ContactMade, WrongNumber, Declined, Sent }
    Letter { RequestContact, DischargeWarning, WasNotBrought, Discharge }
    Deterioration { None, Suspected, Confirmed }
    /// The outcome of a home visit.
    VisitOutcome { Seen, NoAnswer, AccessRefused, NotAtAddress }
    Party {
        Referrer, Gp, OtherAgency, Police, TeamManager, LineManager, SeniorClinician, ServiceManager,
        OnCallManager, SafeguardingChildrenTeam, SafeguardingSupervisor, SafeguardingNurse, ChildrensServices,
        HealthVisitor, SchoolNurse, Education, FamilyCarer, ResponsibleClinician,
    }
    Channel { Phone, Writing, Meeting, Electronic }
    Topic {
        FamilyContact, ColdCall, AlternativeAppointment, JointPlan, OtherAgencies, OnwardReferral, PoliceSupport,
        IntensiveSupport, ParentingImpact, ChildrensServicesKnown, OtherProviders, ImpactOnChild, MhaAssessment,
        Recall, DisengagementPlan, SharePlanWithFamily,
    }
    DecisionOutcome { Yes, No, NotApplicable }
    ReferralTo {
        ChildrensServices, CommunityTreatmentTeam, AnotherService, HomeTreatment, AssertiveOutreach, MhaAssessment,
    }
    MdtOutcome { Continue, Discharge }
    /// What an action is, as `pathway.md` names it.
    ActionCode {
        ContactPatient, ContactFamilyCarers, ConsiderColdCall, LeaveCallingCard, InformPolice, OfferAppointment,
        NotifyReferrer, NotifyGp, NotifyOtherAgencies, AgreeJointPlan, ConsiderMhaAssessment,
        SafeguardingChildrenDiscussion, ConfirmToReferrerInWriting, PhonePatient, WriteToPatient,
        ConsiderOnwardReferral, ContactElectronically, ContactOtherProviders, UnannouncedHomeVisit,
        EscalateToTeamManager, ConsiderPoliceSupport, ConsiderIntensiveSupport, AssessParentingImpact,
        InformChildrensServices, FullAssessment, StepUp, DischargePerCpa, SendDischargeWarningLetter, ArrangeMdt,
        ConsiderImpactOnChild, SendWasNotBroughtLetter, ReferToChildrensServices, ShareMdtPlan, InformGpOfDischarge,
        SendDischargeLetter, ConsiderRecall, DiscussSafeguarding, PlanForDisengagement, FileToEpr,
    }
    /// Who must see that an action is done.
    Role { Assessor, Visitor, CareCoordinator, TeamManager, OnCallManager, ResponsibleClinician, TeamBase }
    Priority { Urgent, High, Routine }
    /// Where an action stands at the time asked about.
    ActionState { Upcoming, Open, Overdue, Done, Cancelled }
    WarningCode {
        DischargeWithoutMdt, DischargeWithOpenActions, DischargeWithoutCrisisPlan, MdtQuorum,
        TransferBeforeReengagement, FactConflict, InvalidRecord, ClockSkew,
    }
}

/// One value of one fact: the variant names the fact.
#[derive(Clone, Debug, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum FactValue {
    Pathway {
        value: Pathway,
    },
    Risk {
        value: Risk,
    },
    Children {
        value: bool,
    },
    ReferrerChildConcern {
        value: bool,
    },
    ImmediateRisk {
        value: bool,
    },
    KnownDisengager {
        value: bool,
    },
    LegalStatus {
        value: LegalStatus,
    },
    Safeguarding {
        value: Safeguarding,
    },
    ChildrensServicesInvolved {
        value: bool,
    },
    /// A user id, or none.
    CareCoordinator {
        value: Option<String>,
    },
}

/// A fact as episode JSON writes it in a `fact_changed` record.
#[derive(Serialize, Deserialize)]
struct RawFact {
    field: FactField,
    value: serde_json::Value,
}

impl Serialize for FactValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fn raw<T: Serialize>(field: FactField, value: &T) -> Result<RawFact, serde_json::Error> {
            Ok(RawFact { field, value: serde_json::to_value(value)? })
        }
        let raw = match self {
            Self::Pathway { value } => raw(FactField::Pathway, value),
            Self::Risk { value } => raw(FactField::Risk, value),
            Self::Children { value } => raw(FactField::Children, value),
            Self::ReferrerChildConcern { value } => raw(FactField::ReferrerChildConcern, value),
            Self::ImmediateRisk { value } => raw(FactField::ImmediateRisk, value),
            Self::KnownDisengager { value } => raw(FactField::KnownDisengager, value),
            Self::LegalStatus { value } => raw(FactField::LegalStatus, value),
            Self::Safeguarding { value } => raw(FactField::Safeguarding, value),
            Self::ChildrensServicesInvolved { value } => raw(FactField::ChildrensServicesInvolved, value),
            Self::CareCoordinator { value } => raw(FactField::CareCoordinator, value),
        };
        raw.map_err(serde::ser::Error::custom)?.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for FactValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let RawFact { field, value } = RawFact::deserialize(deserializer)?;
        let fact = match field {
            FactField::Pathway => serde_json::from_value(value).map(|value| Self::Pathway { value }),
            FactField::Risk => serde_json::from_value(value).map(|value| Self::Risk { value }),
            FactField::Children => serde_json::from_value(value).map(|value| Self::Children { value }),
            FactField::ReferrerChildConcern => {
                serde_json::from_value(value).map(|value| Self::ReferrerChildConcern { value })
            }
            FactField::ImmediateRisk => serde_json::from_value(value).map(|value| Self::ImmediateRisk { value }),
            FactField::KnownDisengager => serde_json::from_value(value).map(|value| Self::KnownDisengager { value }),
            FactField::LegalStatus => serde_json::from_value(value).map(|value| Self::LegalStatus { value }),
            FactField::Safeguarding => serde_json::from_value(value).map(|value| Self::Safeguarding { value }),
            FactField::ChildrensServicesInvolved => {
                serde_json::from_value(value).map(|value| Self::ChildrensServicesInvolved { value })
            }
            FactField::CareCoordinator => serde_json::from_value(value).map(|value| Self::CareCoordinator { value }),
        };
        fact.map_err(serde::de::Error::custom)
    }
}

impl FactValue {
    /// The fact's name and its value as episode JSON.
    pub(crate) fn to_json(&self) -> Result<(episode::FactField, serde_json::Value), TetherError> {
        let raw: RawFact = mirror(self)?;
        Ok((mirror(&raw.field)?, raw.value))
    }

    /// A fact's value as the episode holds it.
    pub(crate) fn from_core(field: episode::FactField, value: &episode::FactValue) -> Result<Self, TetherError> {
        mirror(&serde_json::json!({"field": field, "value": value.to_json()}))
    }
}

/// Where a visit was recorded, if the device knew.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, uniffi::Record)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    /// Metres.
    pub accuracy: f64,
}

/// What a record says: one variant per kind, with that kind's own fields.
///
/// Ids of other records (`visit`, `record`, `records`) are the UUID strings that
/// `record` returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, uniffi::Enum)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    AppointmentMissed {
        appointment: Appointment,
        reason: MissReason,
    },
    AppointmentAttended,
    AppointmentBooked {
        /// When the appointment is (`for` in episode JSON).
        #[serde(rename = "for", with = "time")]
        booked_for: SystemTime,
    },
    ContactAttempt {
        method: Method,
        target: Target,
        outcome: ContactOutcome,
        letter: Option<Letter>,
        crisis_plan: Option<bool>,
        /// Only on `contact_made`.
        deterioration: Option<Deterioration>,
        /// Only on `contact_made`.
        wishes_discharge: Option<bool>,
    },
    HomeVisit {
        announced: bool,
        outcome: VisitOutcome,
        location: Option<Location>,
    },
    CallingCardLeft {
        /// The home visit at which the card was left.
        visit: String,
    },
    Communication {
        party: Party,
        channel: Channel,
    },
    Decision {
        topic: Topic,
        outcome: DecisionOutcome,
        /// Never empty.
        rationale: String,
    },
    ReferralMade {
        to: ReferralTo,
        transfer: bool,
        reason: Option<String>,
    },
    MdtMeeting {
        /// The roles present; the quorum needs `senior_clinician` and `team_manager`.
        attendees: Vec<String>,
        outcome: MdtOutcome,
        plan: Option<String>,
    },
    Reengaged,
    AssessmentCompleted,
    Discharged {
        crisis_plan_sent: bool,
    },
    /// A fact was set (`set_fact` records it; it cannot be recorded directly).
    FactChanged {
        #[serde(flatten)]
        fact: FactValue,
    },
    FiledToEpr {
        records: Vec<String>,
        epr_ref: String,
    },
    EnteredInError {
        record: String,
        reason: String,
    },
}

impl EventBody {
    /// The record's kind and its own fields as episode JSON, for the core to validate.
    pub(crate) fn to_json(&self) -> Result<(String, serde_json::Map<String, serde_json::Value>), TetherError> {
        let json =
            serde_json::to_value(self).map_err(|e| TetherError::other(format!("a record did not convert: {e}")))?;
        let serde_json::Value::Object(mut fields) = json else {
            return Err(TetherError::other("a record did not convert to an object"));
        };
        let Some(serde_json::Value::String(kind)) = fields.remove("kind") else {
            return Err(TetherError::other("a record did not convert with its kind"));
        };
        // Absent optional fields are left out rather than sent as null.
        fields.retain(|_, v| !v.is_null());
        Ok((kind, fields))
    }
}

/// A record as the episode holds it.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Event {
    pub id: String,
    /// When it happened, as the recording device said.
    pub at: SystemTime,
    /// The user who recorded it.
    pub by: String,
    pub device: String,
    pub body: EventBody,
    pub note: Option<String>,
    /// When the server first stored it: set once a sync has brought the server's word
    /// (records made here get it from the sync that sends them).
    pub received_at: Option<SystemTime>,
}

impl Event {
    pub(crate) fn from_core(event: &episode::Event) -> Result<Self, TetherError> {
        let body = match &event.body {
            episode::EventBody::FactChanged(change) => {
                EventBody::FactChanged { fact: FactValue::from_core(change.field, &change.value)? }
            }
            other => mirror(other)?,
        };
        Ok(Self {
            id: event.id.to_string(),
            at: system_time(event.at)?,
            by: event.by.clone(),
            device: event.device.clone(),
            body,
            note: event.note.clone(),
            received_at: event.received_at.map(system_time).transpose()?,
        })
    }
}

/// An episode's facts. A fact with more than one value is a conflict between devices
/// (the rules use the safer value).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Facts {
    pub pathway: Vec<Pathway>,
    pub risk: Vec<Risk>,
    pub children: Vec<bool>,
    pub referrer_child_concern: Vec<bool>,
    pub immediate_risk: Vec<bool>,
    pub known_disengager: Vec<bool>,
    pub legal_status: Vec<LegalStatus>,
    pub safeguarding: Vec<Safeguarding>,
    pub childrens_services_involved: Vec<bool>,
    pub care_coordinator: Vec<Option<String>>,
}

impl Facts {
    fn from_core(facts: &episode::Facts) -> Result<Self, TetherError> {
        fn all<A: Serialize + Ord, B: DeserializeOwned>(fact: &episode::Fact<A>) -> Result<Vec<B>, TetherError> {
            fact.values().iter().map(mirror).collect()
        }
        Ok(Self {
            pathway: all(&facts.pathway)?,
            risk: all(&facts.risk)?,
            children: facts.children.values().to_vec(),
            referrer_child_concern: facts.referrer_child_concern.values().to_vec(),
            immediate_risk: facts.immediate_risk.values().to_vec(),
            known_disengager: facts.known_disengager.values().to_vec(),
            legal_status: all(&facts.legal_status)?,
            safeguarding: all(&facts.safeguarding)?,
            childrens_services_involved: facts.childrens_services_involved.values().to_vec(),
            care_coordinator: facts.care_coordinator.values().to_vec(),
        })
    }
}

/// One episode: its facts, its plan and its records.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Episode {
    pub id: String,
    pub patient_ref: String,
    pub team: String,
    pub opened_at: SystemTime,
    pub opened_by: String,
    pub facts: Facts,
    /// The facts that devices set to different values.
    pub conflicts: Vec<FactField>,
    /// The joint plan of action.
    pub plan: String,
    /// The valid records, in the order they were given.
    pub events: Vec<Event>,
    /// How many stored records failed validation (left out of the rules and reported as
    /// `invalid_record` warnings).
    pub invalid_records: u32,
}

impl Episode {
    pub(crate) fn from_core(episode: &episode::Episode) -> Result<Self, TetherError> {
        Ok(Self {
            id: episode.id.to_string(),
            patient_ref: episode.patient_ref.as_str().to_string(),
            team: episode.team.clone(),
            opened_at: system_time(episode.opened_at)?,
            opened_by: episode.opened_by.clone(),
            facts: Facts::from_core(&episode.facts)?,
            conflicts: episode.facts.conflicts().iter().map(|(field, _)| mirror(field)).collect::<Result<_, _>>()?,
            plan: episode.plan.clone(),
            events: episode.events.iter().map(Event::from_core).collect::<Result<_, _>>()?,
            invalid_records: u32::try_from(episode.invalid_records.len()).unwrap_or(u32::MAX),
        })
    }
}

/// A new episode, as the practitioner opens it.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct NewEpisode {
    pub patient_ref: String,
    pub pathway: Pathway,
    pub team: String,
    /// Facts other than the pathway; the rest take their defaults.
    pub facts: Vec<FactValue>,
    pub plan: String,
}

/// One thing someone must do, by a deadline, and whether it is done.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Action {
    /// The same on every device and on the server.
    pub id: String,
    pub code: ActionCode,
    pub title: String,
    /// The section of the policy the rule comes from.
    pub cites: String,
    pub owner: Role,
    pub priority: Priority,
    pub state: ActionState,
    pub active_from: SystemTime,
    pub due: SystemTime,
    /// The record that did it.
    pub resolved_by: Option<String>,
    /// Done after it was due.
    pub late: bool,
    /// Was overdue at some moment.
    pub was_overdue: bool,
}

impl Action {
    pub(crate) fn from_core(action: &pathway::Action) -> Result<Self, TetherError> {
        Ok(Self {
            id: action.id.to_string(),
            code: mirror(&action.code)?,
            title: action.title.to_string(),
            cites: action.cites.to_string(),
            owner: mirror(&action.owner)?,
            priority: mirror(&action.priority)?,
            state: mirror(&action.state)?,
            active_from: system_time(action.active_from)?,
            due: system_time(action.due)?,
            resolved_by: action.resolved_by.map(|id| id.to_string()),
            late: action.late,
            was_overdue: action.was_overdue,
        })
    }
}

/// Something the rules want a person to look at (a conflict, a record set aside).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Warning {
    pub code: WarningCode,
    pub message: String,
    /// The fact concerned (`fact_conflict`).
    pub field: Option<FactField>,
    /// The record concerned, as stored.
    pub record: Option<String>,
}

/// An episode's actions and warnings at a moment: provisional when the device computed
/// them, not when they are the server's.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Evaluation {
    pub provisional: bool,
    pub evaluated_at: SystemTime,
    pub actions: Vec<Action>,
    pub warnings: Vec<Warning>,
}

impl Evaluation {
    pub(crate) fn from_core(
        provisional: bool,
        evaluated_at: jiff::Timestamp,
        evaluation: &pathway::Evaluation,
    ) -> Result<Self, TetherError> {
        Ok(Self {
            provisional,
            evaluated_at: system_time(evaluated_at)?,
            actions: evaluation.actions.iter().map(Action::from_core).collect::<Result<_, _>>()?,
            warnings: evaluation
                .warnings
                .iter()
                .map(|w| {
                    Ok(Warning {
                        code: mirror(&w.code)?,
                        message: w.message.clone(),
                        field: w.field.as_ref().map(mirror).transpose()?,
                        record: w.record.clone(),
                    })
                })
                .collect::<Result<_, TetherError>>()?,
        })
    }
}

/// An action due across the caseload, for the home screen.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct NextAction {
    pub episode_id: String,
    pub patient_ref: String,
    pub action: Action,
}

/// When the next action on the device falls due: the host schedules a local notification
/// for `due`, which fires with the phone offline. It names the episode and the action,
/// never the patient (a notification shows on a locked screen).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct NextDue {
    pub episode_id: String,
    pub action_id: String,
    pub code: ActionCode,
    pub title: String,
    pub priority: Priority,
    pub due: SystemTime,
}

impl NextDue {
    pub(crate) fn from_core(next: &client_core::NextDue) -> Result<Self, TetherError> {
        Ok(Self {
            episode_id: next.episode.to_string(),
            action_id: next.action.to_string(),
            code: mirror(&next.code)?,
            title: next.title.clone(),
            priority: mirror(&next.priority)?,
            due: system_time(next.due)?,
        })
    }
}

/// One line of the device's caseload, as the server's caseload gives it too.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct EpisodeSummary {
    pub id: String,
    pub team: String,
    /// The pathway the rules take: on a conflict, the safer value (`Episode.facts`
    /// holds every value, `Episode.conflicts` names the conflicted facts).
    pub pathway: Pathway,
    pub patient_ref: String,
    /// Actions still to be done: open or overdue.
    pub open_actions: u32,
    /// Of those, the overdue ones.
    pub overdue_actions: u32,
    /// How many facts hold concurrent values.
    pub conflicts: u32,
}

/// An episode the server refused: kept whole on the device, and offered again when it
/// could succeed (it changes, a user signs in, or the server's copy changes).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct HeldBack {
    pub episode_id: String,
    /// Why, typed, for the app to say what to do.
    pub reason: HoldReason,
    /// The same as a sentence for the practitioner (it names no patient).
    pub message: String,
}

/// Why the server refused an episode (`episode::sync::Refusal`).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum HoldReason {
    /// Not one of the user's teams' episodes.
    NotFound,
    /// A record new to the server was made on another device (a colleague's, through a
    /// peer exchange): it waits until that device has synced it.
    OtherDevice { record_id: String },
    /// A record (or, with no record, the episode's opening) is by `by`, who has not
    /// signed in on this device: signing in as them sends it.
    NotSignedInHere { record_id: Option<String>, by: String },
    /// A record is over a limit: `field` (empty: the record as a whole) may take `limit`
    /// bytes.
    TooLarge { record_id: String, field: String, limit: u64 },
    /// The episode has reached its budget: record in a new episode.
    EpisodeFull { bytes: u64, budget: u64 },
    /// The episode breaks a rule of the server's; the message says which.
    Invalid { message: String },
}

impl From<&episode::sync::Refusal> for HoldReason {
    fn from(reason: &episode::sync::Refusal) -> Self {
        use episode::sync::Refusal;
        match reason {
            Refusal::NotFound => Self::NotFound,
            Refusal::OtherDevice { record } => Self::OtherDevice { record_id: record.to_string() },
            Refusal::NotSignedInHere { record, by } => {
                Self::NotSignedInHere { record_id: record.map(|r| r.to_string()), by: by.clone() }
            }
            Refusal::TooLarge { record, field, limit } => {
                Self::TooLarge { record_id: record.to_string(), field: field.clone(), limit: *limit }
            }
            Refusal::EpisodeFull { bytes, budget } => Self::EpisodeFull { bytes: *bytes, budget: *budget },
            Refusal::Invalid { message } => Self::Invalid { message: message.clone() },
        }
    }
}

/// What a sync did.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct SyncSummary {
    pub round_trips: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Episodes this device sent changes or whole copies of.
    pub sent: u32,
    /// Episodes that gained changes from the server.
    pub received: u32,
    /// Episodes new to this device.
    pub new_episodes: u32,
    /// Episodes dropped after a transfer, once the server held all of them.
    pub dropped: u32,
    /// Episodes the server refused in this sync, with its reasons.
    pub held_back: Vec<HeldBack>,
    /// The server's clock minus the device's, in milliseconds.
    pub clock_offset_ms: i64,
    /// Whether the session finished (nothing left to say) rather than stopping early.
    pub complete: bool,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl From<&client_core::HeldBack> for HeldBack {
    fn from(held: &client_core::HeldBack) -> Self {
        Self { episode_id: held.episode.to_string(), reason: (&held.reason).into(), message: held.message.clone() }
    }
}

impl From<&client_core::SyncSummary> for SyncSummary {
    fn from(s: &client_core::SyncSummary) -> Self {
        Self {
            round_trips: count(s.round_trips),
            bytes_sent: s.bytes_sent as u64,
            bytes_received: s.bytes_received as u64,
            sent: count(s.sent),
            received: count(s.received),
            new_episodes: count(s.new_episodes),
            dropped: count(s.dropped),
            held_back: s.held_back.iter().map(HeldBack::from).collect(),
            clock_offset_ms: s.clock_offset_ms,
            complete: s.complete,
        }
    }
}

impl EpisodeSummary {
    pub(crate) fn from_core(s: &client_core::EpisodeSummary) -> Result<Self, TetherError> {
        Ok(Self {
            id: s.id.to_string(),
            team: s.team.clone(),
            pathway: mirror(&s.pathway)?,
            patient_ref: s.patient_ref.as_str().to_string(),
            open_actions: count(s.open_actions),
            overdue_actions: count(s.overdue_actions),
            conflicts: count(s.conflicts),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value of an `episode` enum has its twin here, and comes back unchanged.
    fn both_ways<A, B>(values: impl IntoIterator<Item = A>)
    where
        A: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
        B: Serialize + DeserializeOwned,
    {
        for value in values {
            let twin: B = mirror(&value).unwrap_or_else(|e| panic!("{value:?}: {e}"));
            let back: A = mirror(&twin).unwrap_or_else(|e| panic!("{value:?} back: {e}"));
            assert_eq!(back, value);
        }
    }

    #[test]
    fn every_action_code_warning_and_fact_field_has_a_twin() {
        both_ways::<pathway::Code, ActionCode>(pathway::Code::ALL.iter().copied());
        both_ways::<pathway::WarningCode, WarningCode>(pathway::WarningCode::ALL.iter().copied());
        both_ways::<episode::FactField, FactField>(episode::FactField::ALL);
    }

    #[test]
    fn every_record_kind_converts_to_json_the_core_reads() {
        let visit = "0190f5a4-0000-7000-8000-000000000001".to_string();
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_780_000_000);
        let bodies = vec![
            EventBody::AppointmentMissed { appointment: Appointment::Initial, reason: MissReason::NotBrought },
            EventBody::AppointmentAttended,
            EventBody::AppointmentBooked { booked_for: at },
            EventBody::ContactAttempt {
                method: Method::LetterFirstClass,
                target: Target::Patient,
                outcome: ContactOutcome::Sent,
                letter: Some(Letter::DischargeWarning),
                crisis_plan: Some(true),
                deterioration: None,
                wishes_discharge: None,
            },
            EventBody::HomeVisit {
                announced: false,
                outcome: VisitOutcome::NoAnswer,
                location: Some(Location { lat: 51.5, lon: -0.1, accuracy: 12.0 }),
            },
            EventBody::CallingCardLeft { visit: visit.clone() },
            EventBody::Communication { party: Party::SafeguardingChildrenTeam, channel: Channel::Electronic },
            EventBody::Decision {
                topic: Topic::SharePlanWithFamily,
                outcome: DecisionOutcome::NotApplicable,
                rationale: "no family".into(),
            },
            EventBody::ReferralMade { to: ReferralTo::MhaAssessment, transfer: true, reason: None },
            EventBody::MdtMeeting {
                attendees: vec!["senior_clinician".into(), "team_manager".into()],
                outcome: MdtOutcome::Continue,
                plan: Some("weekly calls".into()),
            },
            EventBody::Reengaged,
            EventBody::AssessmentCompleted,
            EventBody::Discharged { crisis_plan_sent: true },
            EventBody::FactChanged { fact: FactValue::LegalStatus { value: LegalStatus::Cto } },
            EventBody::FiledToEpr { records: vec![visit.clone()], epr_ref: "EPR-1".into() },
            EventBody::EnteredInError { record: visit, reason: "wrong patient".into() },
        ];
        let mut kinds = Vec::new();
        for body in bodies {
            let (kind, mut fields) = body.to_json().expect("to JSON");
            fields.insert("kind".into(), kind.clone().into());
            for (key, value) in [
                ("id", "0190f5a4-0000-7000-8000-000000000002"),
                ("at", "2026-05-28T20:26:40Z"),
                ("by", "u-1"),
                ("device", "d"),
            ] {
                fields.insert(key.into(), value.into());
            }
            let event = episode::Event::from_value(&serde_json::Value::Object(fields), 0)
                .unwrap_or_else(|e| panic!("{kind}: the core refused it: {e}"));
            let back = Event::from_core(&event).expect("back");
            assert_eq!(back.body, body, "{kind}");
            kinds.push(kind);
        }
        assert_eq!(kinds, episode::EventBody::KINDS);
    }

    #[test]
    fn fact_values_convert_with_their_field() {
        let fact = FactValue::CareCoordinator { value: Some("u-2".into()) };
        let (field, json) = fact.to_json().expect("to JSON");
        assert_eq!(field, episode::FactField::CareCoordinator);
        let value = episode::FactValue::from_json(field, &json).expect("the core reads it");
        assert_eq!(FactValue::from_core(field, &value).expect("back"), fact);
    }
}

/// A sign-in with the trust's identity provider, started: open `authorization_url` in the
/// system browser (Custom Tabs, `ASWebAuthenticationSession`), and hand the address it is
/// sent back to (`redirect_uri`…) to `finish_identity_sign_in`.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct IdentitySignIn {
    pub provider: String,
    pub authorization_url: String,
    pub redirect_uri: String,
}

/// A sign-in with the identity provider that has not finished.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct PendingIdentitySignIn {
    pub provider: String,
    pub redirect_uri: String,
    pub started_at: SystemTime,
}
