//! The disengagement pathway as a pure function:
//! `evaluate(episode, now, calendar) -> Evaluation`. `docs/rules.md` (printed from
//! [`table`]) is the account of the rules, row by row.
//!
//! Nothing here does I/O, reads a clock or knows of Automerge: time comes in as `now`, so
//! a phone with no signal and the server give the same answer for the same records.
//!
//! - [`calendar`]: Europe/London time, working days, the bank holidays of England and Wales.
//! - [`defaults`]: the local defaults (†), overridable, printed by `tether pathway rules`.
//! - `engine`: what every rule shares: current facts, cycles, raising and resolving actions.
//! - `records`: what a record counts as (a contact, a phone call to the patient, …).
//! - one module per pathway, read beside its section of the table: `urgent_referral`
//!   (5.1.1), `routine_referral` (5.1.2), `in_service_risk` (5.2), `in_service_no_risk`
//!   (5.3), `home_treatment` (A), `child_not_brought` (WNB), and `across` for the rules
//!   across pathways and the warnings.
//! - [`table`]: the rule table: every row's code, owner, priority, cites and deadline,
//!   stated once; the engine raises from it and `tether pathway rules` prints it.

use std::borrow::Cow;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::{Episode, EventId, FactField};

mod across;
pub mod calendar;
mod child_not_brought;
pub mod defaults;
mod engine;
mod home_treatment;
mod in_service_no_risk;
mod in_service_risk;
mod records;
mod routine_referral;
pub mod table;
mod urgent_referral;

pub use calendar::Calendar;
pub use defaults::{Deadline, Defaults};
pub use engine::action_id;

/// The actions an episode calls for at a moment, and the warnings beside them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Sorted by due time, then start, code and id.
    pub actions: Vec<Action>,
    /// Sorted by code, then field and record.
    pub warnings: Vec<Warning>,
}

/// One thing someone must do, by a deadline, and whether it is done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// Derived from the code and the triggering record's id: the same on every device
    /// and in every evaluation.
    pub id: uuid::Uuid,
    pub code: Code,
    pub title: Cow<'static, str>,
    /// The section of the policy the rule comes from.
    pub cites: Cow<'static, str>,
    pub owner: Role,
    pub priority: Priority,
    pub state: State,
    // Computed: a deadline from a record late in 2100 falls in 2101, and must read back.
    #[serde(with = "crate::json::time::stored")]
    pub active_from: Timestamp,
    #[serde(with = "crate::json::time::stored")]
    pub due: Timestamp,
    /// The record that did it.
    pub resolved_by: Option<EventId>,
    /// Done after it was due.
    pub late: bool,
    /// Was overdue at some moment: done late, cancelled while overdue, or overdue now.
    pub was_overdue: bool,
    /// The record that raised it (the episode's id when the episode's opening did).
    pub trigger: uuid::Uuid,
}

/// Where an action stands at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not active yet (`now < active_from`), shown so a practitioner knows what comes next.
    Upcoming,
    Open,
    /// `now > due`, not done.
    Overdue,
    Done,
    /// Made unnecessary by contact with the patient (`offer_appointment`: or by a
    /// discharge).
    Cancelled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Urgent,
    High,
    Routine,
}

/// Who must see that an action is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Whoever is assessing a referral (5.1).
    Assessor,
    /// Whoever made the home visit.
    Visitor,
    CareCoordinator,
    TeamManager,
    OnCallManager,
    ResponsibleClinician,
    /// The team base, which files field records in the electronic patient record.
    TeamBase,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Assessor => "assessor",
            Self::Visitor => "visitor",
            Self::CareCoordinator => "care_coordinator",
            Self::TeamManager => "team_manager",
            Self::OnCallManager => "on_call_manager",
            Self::ResponsibleClinician => "responsible_clinician",
            Self::TeamBase => "team_base",
        })
    }
}

macro_rules! codes {
    ($($variant:ident = $name:literal, $title:literal;)*) => {
        /// What an action is, as the rule table names it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// Every code.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as JSON writes it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }

            /// A short title in plain clinical English.
            pub fn title(self) -> &'static str {
                match self {
                    $(Code::$variant => $title,)*
                }
            }
        }
    };
}

codes! {
    ContactPatient = "contact_patient", "Contact the patient";
    ContactFamilyCarers = "contact_family_carers", "Contact family, carers or named contacts";
    ConsiderColdCall = "consider_cold_call", "Consider an unannounced visit (cold call)";
    LeaveCallingCard = "leave_calling_card", "Leave a calling card asking the patient to get in touch";
    InformPolice = "inform_police", "Inform the police of the risk";
    OfferAppointment = "offer_appointment", "Offer another appointment";
    NotifyReferrer = "notify_referrer", "Tell the referrer";
    NotifyGp = "notify_gp", "Tell the GP";
    NotifyOtherAgencies = "notify_other_agencies", "Tell other agencies involved";
    AgreeJointPlan = "agree_joint_plan", "Agree a joint plan of action";
    ConsiderMhaAssessment = "consider_mha_assessment", "Consider a Mental Health Act assessment";
    SafeguardingChildrenDiscussion = "safeguarding_children_discussion", "Discuss the concern for children with the safeguarding children team and a manager";
    ConfirmToReferrerInWriting = "confirm_to_referrer_in_writing", "Confirm to the referrer in writing";
    PhonePatient = "phone_patient", "Phone the patient";
    WriteToPatient = "write_to_patient", "Write to the patient first class asking them to get in touch";
    ConsiderOnwardReferral = "consider_onward_referral", "Consider referring on to another service";
    ContactElectronically = "contact_electronically", "Text or email the patient";
    ContactOtherProviders = "contact_other_providers", "Contact other providers involved";
    UnannouncedHomeVisit = "unannounced_home_visit", "Make an unannounced home visit";
    EscalateToTeamManager = "escalate_to_team_manager", "Escalate to the team manager";
    ConsiderPoliceSupport = "consider_police_support", "Consider asking the police for support";
    ConsiderIntensiveSupport = "consider_intensive_support", "Consider home treatment or assertive outreach";
    AssessParentingImpact = "assess_parenting_impact", "Assess the impact on parenting with a manager or safeguarding lead";
    InformChildrensServices = "inform_childrens_services", "Inform Children's Services";
    FullAssessment = "full_assessment", "Complete a full assessment of needs and risk";
    StepUp = "step_up", "Step up care: refer to the community treatment team";
    DischargePerCpa = "discharge_per_cpa", "Discharge under CPA, as the patient wishes";
    SendDischargeWarningLetter = "send_discharge_warning_letter", "Send the discharge warning letter";
    ArrangeMdt = "arrange_mdt", "Arrange a team (MDT) meeting";
    ConsiderImpactOnChild = "consider_impact_on_child", "Consider the impact of the missed appointment on the child";
    SendWasNotBroughtLetter = "send_was_not_brought_letter", "Send the 'was not brought' letter to the parent or carer";
    ReferToChildrensServices = "refer_to_childrens_services", "Refer to Children's Services for neglect of health needs";
    ShareMdtPlan = "share_mdt_plan", "Share the MDT plan with the GP, other agencies and the family";
    InformGpOfDischarge = "inform_gp_of_discharge", "Tell the GP of the discharge";
    SendDischargeLetter = "send_discharge_letter", "Discharge with a letter and the crisis plan";
    ConsiderRecall = "consider_recall", "Consider recall";
    DiscussSafeguarding = "discuss_safeguarding", "Discuss the safeguarding concern with the safeguarding nurse and the team manager";
    PlanForDisengagement = "plan_for_disengagement", "Make a plan for when the patient disengages";
    FileToEpr = "file_to_epr", "File the record in the electronic patient record";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something the rules noticed that a person must look at; never silently dropped.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Warning {
    pub code: WarningCode,
    pub message: String,
    /// The fact concerned (`fact_conflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<FactField>,
    /// The record concerned, as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningCode {
    /// A `discharged` with no discharge decision by a quorate MDT (and not a discharge
    /// under CPA).
    DischargeWithoutMdt,
    /// A `discharged` after which actions raised before it are still owed; the message
    /// names their codes.
    DischargeWithOpenActions,
    /// A `discharged` with `crisis_plan_sent: false`.
    DischargeWithoutCrisisPlan,
    /// An `mdt_meeting` without a senior clinician and the team manager.
    MdtQuorum,
    /// A full transfer to assertive outreach before the patient re-engaged (5.2).
    TransferBeforeReengagement,
    /// Devices set a fact to different values; the rules use the safer one.
    FactConflict,
    /// A stored record failed validation and is left out of the rules.
    InvalidRecord,
    /// A record's time is more than five minutes after the server received it.
    ClockSkew,
}

impl WarningCode {
    /// Every warning.
    pub const ALL: &'static [WarningCode] = &[
        Self::DischargeWithoutMdt,
        Self::DischargeWithOpenActions,
        Self::DischargeWithoutCrisisPlan,
        Self::MdtQuorum,
        Self::TransferBeforeReengagement,
        Self::FactConflict,
        Self::InvalidRecord,
        Self::ClockSkew,
    ];
}

/// Evaluates an episode at `now` with the default local settings.
pub fn evaluate(episode: &Episode, now: Timestamp, calendar: &Calendar) -> Evaluation {
    evaluate_with(episode, now, calendar, &Defaults::default())
}

/// Evaluates an episode at `now` with a deployment's local defaults.
pub fn evaluate_with(episode: &Episode, now: Timestamp, calendar: &Calendar, defaults: &Defaults) -> Evaluation {
    let cx = engine::Ctx::new(episode, now, calendar, defaults);
    let mut out = engine::Out::new(&cx);
    for pathway in cx.facts.pathways() {
        match pathway {
            engine::Rules::UrgentReferral => urgent_referral::apply(&cx, &mut out),
            engine::Rules::RoutineReferral => routine_referral::apply(&cx, &mut out),
            engine::Rules::InServiceRisk => in_service_risk::apply(&cx, &mut out),
            engine::Rules::InServiceNoRisk => in_service_no_risk::apply(&cx, &mut out),
            engine::Rules::HomeTreatment => home_treatment::apply(&cx, &mut out),
            engine::Rules::ChildNotBrought => child_not_brought::apply(&cx, &mut out),
        }
    }
    across::apply(&cx, &mut out);
    out.finish(&cx)
}
