//! The typed episode: its facts, its events and the values they may take, exactly as
//! `shared/pathway.md` defines them.
//!
//! Every enum here is closed: a value not listed in the policy is refused when JSON is
//! read (see [`crate::json`]). Enums whose values are ordered by risk derive `Ord` in
//! that order, lowest risk first, so that a conflict resolves to the safer side with
//! `max` (see [`Fact::safest`]).

use std::fmt;

pub use crate::ids::{EpisodeId, EventId};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The trust's patient identifier.
///
/// It is never logged: `Debug` prints a placeholder, there is no `Display`, and the
/// value is only reachable through [`PatientRef::as_str`], so that writing it anywhere
/// is a visible decision.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PatientRef(String);

impl PatientRef {
    /// A patient reference; `None` when it is empty or only white space.
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into();
        (!value.trim().is_empty()).then_some(Self(value))
    }

    /// The identifier itself. Never put it in a log, a panic or an error message.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PatientRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PatientRef(<redacted>)")
    }
}

/// Which part of the policy an episode follows.
///
/// Ordered by how short its deadlines are, longest first, so that `max` picks the
/// pathway with the shorter deadlines on a conflict (`pathway.md`, "Conflicting facts").
/// `child_not_brought` is ordered last but is never resolved against the others: a
/// conflict that involves it evaluates both pathways.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pathway {
    /// 5.1.2: a routine referral not yet seen. (The default only serves
    /// `Facts::default`; an episode's pathway is always given explicitly.)
    #[default]
    RoutineReferral,
    /// 5.2 or 5.3: a patient in receipt of services.
    InService,
    /// 5.1.1: an urgent or emergency referral not yet seen.
    UrgentReferral,
    /// Appendix A: home treatment, high risk.
    HomeTreatment,
    /// WNB: a child not brought to appointments.
    ChildNotBrought,
}

/// "Each category is separated into high and low risk."
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    #[default]
    Low,
    High,
}

/// The patient's legal status (5.4). Any status is safer than `none`; the two statuses
/// under which a patient can be recalled come last, so a conflict keeps the recall rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegalStatus {
    #[default]
    None,
    MhaSection,
    Mca,
    CourtOrder,
    ConditionalDischarge,
    Cto,
}

/// Safeguarding concerns (5.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Safeguarding {
    #[default]
    None,
    Adult,
    Child,
    Both,
}

impl Safeguarding {
    /// Whether the concerns include a child.
    pub fn includes_child(self) -> bool {
        matches!(self, Self::Child | Self::Both)
    }

    /// Whether the concerns include an adult.
    pub fn includes_adult(self) -> bool {
        matches!(self, Self::Adult | Self::Both)
    }
}

/// A fact as the episode document holds it: one value, or several values written
/// concurrently on different devices (a conflict to reconcile).
///
/// The values are kept sorted and without repeats, so two documents that merged the
/// same writes in a different order read the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fact<T>(Vec<T>);

impl<T: Ord> Fact<T> {
    /// A fact with one value.
    pub fn new(value: T) -> Self {
        Self(vec![value])
    }

    /// A fact from the concurrent values of a register; `None` when there are none.
    pub fn concurrent(mut values: Vec<T>) -> Option<Self> {
        values.sort();
        values.dedup();
        (!values.is_empty()).then_some(Self(values))
    }

    /// The values, sorted; more than one is a conflict.
    pub fn values(&self) -> &[T] {
        &self.0
    }

    /// Whether devices set this fact to different values concurrently.
    pub fn is_conflict(&self) -> bool {
        self.0.len() > 1
    }

    /// The safer of the values: types order their values by risk, lowest first.
    pub fn safest(&self) -> &T {
        // A `Fact` is never empty: both constructors guarantee it.
        &self.0[self.0.len() - 1]
    }
}

impl<T: Ord + Default> Default for Fact<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: Serialize> Serialize for Fact<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(serializer),
            many => many.serialize(serializer),
        }
    }
}

/// The facts of an episode (`pathway.md`, "Episode"). Missing facts take these defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub pathway: Fact<Pathway>,
    pub risk: Fact<Risk>,
    pub children: Fact<bool>,
    pub referrer_child_concern: Fact<bool>,
    pub immediate_risk: Fact<bool>,
    pub known_disengager: Fact<bool>,
    pub legal_status: Fact<LegalStatus>,
    pub safeguarding: Fact<Safeguarding>,
    pub childrens_services_involved: Fact<bool>,
    pub care_coordinator: Fact<Option<String>>,
}

impl Facts {
    /// The facts that devices set to different values concurrently, with those values
    /// as JSON, in the order of [`FactField::ALL`].
    pub fn conflicts(&self) -> Vec<(FactField, Vec<serde_json::Value>)> {
        fn values<T: Serialize>(field: FactField, fact: &Fact<T>) -> Option<(FactField, Vec<serde_json::Value>)> {
            (fact.0.len() > 1).then(|| {
                (field, fact.0.iter().map(|v| serde_json::to_value(v).unwrap_or(serde_json::Value::Null)).collect())
            })
        }
        [
            values(FactField::Pathway, &self.pathway),
            values(FactField::Risk, &self.risk),
            values(FactField::Children, &self.children),
            values(FactField::ReferrerChildConcern, &self.referrer_child_concern),
            values(FactField::ImmediateRisk, &self.immediate_risk),
            values(FactField::KnownDisengager, &self.known_disengager),
            values(FactField::LegalStatus, &self.legal_status),
            values(FactField::Safeguarding, &self.safeguarding),
            values(FactField::ChildrensServicesInvolved, &self.childrens_services_involved),
            values(FactField::CareCoordinator, &self.care_coordinator),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// The name of a fact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactField {
    Pathway,
    Risk,
    Children,
    ReferrerChildConcern,
    ImmediateRisk,
    KnownDisengager,
    LegalStatus,
    Safeguarding,
    ChildrensServicesInvolved,
    CareCoordinator,
}

impl FactField {
    /// Every fact, in the order of `pathway.md`.
    pub const ALL: [FactField; 10] = [
        Self::Pathway,
        Self::Risk,
        Self::Children,
        Self::ReferrerChildConcern,
        Self::ImmediateRisk,
        Self::KnownDisengager,
        Self::LegalStatus,
        Self::Safeguarding,
        Self::ChildrensServicesInvolved,
        Self::CareCoordinator,
    ];

    /// The field's JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pathway => "pathway",
            Self::Risk => "risk",
            Self::Children => "children",
            Self::ReferrerChildConcern => "referrer_child_concern",
            Self::ImmediateRisk => "immediate_risk",
            Self::KnownDisengager => "known_disengager",
            Self::LegalStatus => "legal_status",
            Self::Safeguarding => "safeguarding",
            Self::ChildrensServicesInvolved => "childrens_services_involved",
            Self::CareCoordinator => "care_coordinator",
        }
    }

    /// The field with this JSON name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl fmt::Display for FactField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value of one fact, typed by its field.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FactValue {
    Pathway(Pathway),
    Risk(Risk),
    /// `children`, `referrer_child_concern`, `immediate_risk`, `known_disengager`,
    /// `childrens_services_involved`.
    Flag(bool),
    LegalStatus(LegalStatus),
    Safeguarding(Safeguarding),
    /// `care_coordinator`: a user id, or none.
    User(Option<String>),
}

impl FactValue {
    /// Reads a JSON value as a value of `field`, or says what was wrong.
    pub fn from_json(field: FactField, value: &serde_json::Value) -> Result<Self, String> {
        fn typed<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Result<T, String> {
            T::deserialize(value).map_err(|e| crate::json::redact(&e.to_string()))
        }
        Ok(match field {
            FactField::Pathway => Self::Pathway(typed(value)?),
            FactField::Risk => Self::Risk(typed(value)?),
            FactField::Children
            | FactField::ReferrerChildConcern
            | FactField::ImmediateRisk
            | FactField::KnownDisengager
            | FactField::ChildrensServicesInvolved => Self::Flag(typed(value)?),
            FactField::LegalStatus => Self::LegalStatus(typed(value)?),
            FactField::Safeguarding => Self::Safeguarding(typed(value)?),
            FactField::CareCoordinator => {
                let user: Option<String> = typed(value)?;
                if user.as_deref().is_some_and(|u| u.trim().is_empty()) {
                    return Err("a care coordinator is a user id or null, not an empty string".into());
                }
                Self::User(user)
            }
        })
    }

    /// The value as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let value = match self {
            Self::Pathway(v) => serde_json::to_value(v),
            Self::Risk(v) => serde_json::to_value(v),
            Self::Flag(v) => serde_json::to_value(v),
            Self::LegalStatus(v) => serde_json::to_value(v),
            Self::Safeguarding(v) => serde_json::to_value(v),
            Self::User(v) => serde_json::to_value(v),
        };
        // Serialising these plain enums, booleans and strings cannot fail.
        value.unwrap_or(serde_json::Value::Null)
    }
}

/// An episode: one patient's period of concern about engagement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Episode {
    pub id: EpisodeId,
    pub patient_ref: PatientRef,
    pub team: String,
    #[serde(with = "crate::json::time")]
    pub opened_at: Timestamp,
    pub opened_by: String,
    #[serde(flatten)]
    pub facts: Facts,
    /// The joint plan of action (5.1, 5.6), edited by several people.
    pub plan: String,
    /// The valid records, in the order they were given.
    pub events: Vec<Event>,
    /// Records a stored document holds that fail validation (from an older or faulty
    /// client). They are kept, left out of the rules and reported as `invalid_record`.
    #[serde(skip)]
    pub invalid_records: Vec<InvalidRecord>,
}

/// A stored record that failed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRecord {
    /// The record's id as stored (it may itself be what is wrong).
    pub id: String,
    /// What is wrong with it; never holds a patient identifier.
    pub error: String,
}

/// A record: immutable once made; corrected only by an `entered_in_error` naming it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub id: EventId,
    /// When it happened, as the practitioner's device recorded it.
    #[serde(with = "crate::json::time")]
    pub at: Timestamp,
    pub by: String,
    pub device: String,
    #[serde(flatten)]
    pub body: EventBody,
    pub note: Option<String>,
    /// When the server received it, once it has.
    #[serde(with = "crate::json::time::option", skip_serializing_if = "Option::is_none")]
    pub received_at: Option<Timestamp>,
}

/// What a record says, by its `kind`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    AppointmentMissed(AppointmentMissed),
    AppointmentAttended(Empty),
    AppointmentBooked(AppointmentBooked),
    ContactAttempt(ContactAttempt),
    HomeVisit(HomeVisit),
    CallingCardLeft(CallingCardLeft),
    Communication(Communication),
    Decision(Decision),
    ReferralMade(ReferralMade),
    MdtMeeting(MdtMeeting),
    Reengaged(Empty),
    AssessmentCompleted(Empty),
    Discharged(Discharged),
    FactChanged(FactChanged),
    FiledToEpr(FiledToEpr),
    EnteredInError(EnteredInError),
}

impl EventBody {
    /// Every kind, as JSON names it.
    pub const KINDS: [&'static str; 16] = [
        "appointment_missed",
        "appointment_attended",
        "appointment_booked",
        "contact_attempt",
        "home_visit",
        "calling_card_left",
        "communication",
        "decision",
        "referral_made",
        "mdt_meeting",
        "reengaged",
        "assessment_completed",
        "discharged",
        "fact_changed",
        "filed_to_epr",
        "entered_in_error",
    ];

    /// The record's kind, as JSON names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AppointmentMissed(_) => "appointment_missed",
            Self::AppointmentAttended(_) => "appointment_attended",
            Self::AppointmentBooked(_) => "appointment_booked",
            Self::ContactAttempt(_) => "contact_attempt",
            Self::HomeVisit(_) => "home_visit",
            Self::CallingCardLeft(_) => "calling_card_left",
            Self::Communication(_) => "communication",
            Self::Decision(_) => "decision",
            Self::ReferralMade(_) => "referral_made",
            Self::MdtMeeting(_) => "mdt_meeting",
            Self::Reengaged(_) => "reengaged",
            Self::AssessmentCompleted(_) => "assessment_completed",
            Self::Discharged(_) => "discharged",
            Self::FactChanged(_) => "fact_changed",
            Self::FiledToEpr(_) => "filed_to_epr",
            Self::EnteredInError(_) => "entered_in_error",
        }
    }
}

/// A kind with no fields of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppointmentMissed {
    pub appointment: Appointment,
    #[serde(default)]
    pub reason: MissReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Appointment {
    Initial,
    FollowUp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissReason {
    #[default]
    DidNotAttend,
    NotBrought,
    LeftBeforeSeen,
    DischargedAgainstAdvice,
    AssessmentRefused,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppointmentBooked {
    #[serde(with = "crate::json::time")]
    pub r#for: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactAttempt {
    pub method: Method,
    pub target: Target,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub letter: Option<Letter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crisis_plan: Option<bool>,
    /// Only on `contact_made`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deterioration: Option<Deterioration>,
    /// Only on `contact_made`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wishes_discharge: Option<bool>,
}

impl ContactAttempt {
    /// A letter of either kind.
    pub fn is_letter(&self) -> bool {
        matches!(self.method, Method::Letter | Method::LetterFirstClass)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Phone,
    Sms,
    Email,
    Letter,
    LetterFirstClass,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Patient,
    FamilyCarer,
    NamedContact,
    Associate,
    OtherProvider,
    ParentCarer,
}

impl Target {
    /// Family, carers and the patient's named contacts and associates (5.1.1, 5.2, 5.3).
    pub fn is_family(self) -> bool {
        matches!(self, Self::FamilyCarer | Self::NamedContact | Self::Associate)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    NoAnswer,
    MessageLeft,
    ContactMade,
    WrongNumber,
    Declined,
    Sent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Letter {
    RequestContact,
    DischargeWarning,
    WasNotBrought,
    Discharge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deterioration {
    None,
    Suspected,
    Confirmed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeVisit {
    pub announced: bool,
    pub outcome: VisitOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitOutcome {
    Seen,
    NoAnswer,
    AccessRefused,
    NotAtAddress,
}

/// Where a visit was recorded, if the device knew.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawLocation")]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    /// Metres.
    pub accuracy: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocation {
    lat: f64,
    lon: f64,
    accuracy: f64,
}

impl TryFrom<RawLocation> for Location {
    type Error = String;

    fn try_from(raw: RawLocation) -> Result<Self, String> {
        if !(-90.0..=90.0).contains(&raw.lat) {
            return Err("`lat` must be between -90 and 90".into());
        }
        if !(-180.0..=180.0).contains(&raw.lon) {
            return Err("`lon` must be between -180 and 180".into());
        }
        if !(raw.accuracy.is_finite() && raw.accuracy >= 0.0) {
            return Err("`accuracy` must be a distance in metres, not negative".into());
        }
        Ok(Self { lat: raw.lat, lon: raw.lon, accuracy: raw.accuracy })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallingCardLeft {
    /// The home visit at which the card was left.
    pub visit: EventId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Communication {
    pub party: Party,
    pub channel: Channel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Referrer,
    Gp,
    OtherAgency,
    Police,
    TeamManager,
    LineManager,
    SeniorClinician,
    ServiceManager,
    OnCallManager,
    SafeguardingChildrenTeam,
    SafeguardingSupervisor,
    SafeguardingNurse,
    ChildrensServices,
    HealthVisitor,
    SchoolNurse,
    Education,
    FamilyCarer,
    ResponsibleClinician,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Phone,
    Writing,
    Meeting,
    Electronic,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub topic: Topic,
    pub outcome: DecisionOutcome,
    pub rationale: Rationale,
}

/// Why a decision was made: never empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Rationale(String);

impl Rationale {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Rationale {
    type Error = &'static str;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value.trim().is_empty() { Err("a decision needs a rationale: it may not be empty") } else { Ok(Self(value)) }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    FamilyContact,
    ColdCall,
    AlternativeAppointment,
    JointPlan,
    OtherAgencies,
    OnwardReferral,
    PoliceSupport,
    IntensiveSupport,
    ParentingImpact,
    ChildrensServicesKnown,
    OtherProviders,
    ImpactOnChild,
    MhaAssessment,
    Recall,
    DisengagementPlan,
    SharePlanWithFamily,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionOutcome {
    Yes,
    No,
    NotApplicable,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferralMade {
    pub to: ReferralTo,
    #[serde(default)]
    pub transfer: bool,
    /// Free text such as `neglect_of_health_needs`: the policy's list is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferralTo {
    ChildrensServices,
    CommunityTreatmentTeam,
    AnotherService,
    HomeTreatment,
    AssertiveOutreach,
    MhaAssessment,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdtMeeting {
    /// The roles present. The policy names no closed list of roles, so these are
    /// strings; the quorum needs `senior_clinician` and `team_manager` (5.6).
    pub attendees: Vec<String>,
    pub outcome: MdtOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

impl MdtMeeting {
    /// A senior clinician and the team manager were both there (5.6).
    pub fn is_quorate(&self) -> bool {
        let present = |role: &str| self.attendees.iter().any(|a| a == role);
        present("senior_clinician") && present("team_manager")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MdtOutcome {
    Continue,
    Discharge,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discharged {
    pub crisis_plan_sent: bool,
}

/// A change of an episode fact, for the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactChanged {
    pub field: FactField,
    pub value: FactValue,
}

impl Serialize for FactChanged {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("FactChanged", 2)?;
        s.serialize_field("field", &self.field)?;
        s.serialize_field("value", &self.value.to_json())?;
        s.end()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiledToEpr {
    pub records: Vec<EventId>,
    pub epr_ref: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnteredInError {
    pub record: EventId,
    pub reason: String,
}
