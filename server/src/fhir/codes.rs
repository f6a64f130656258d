//! The terminology the FHIR mapping uses: national codes (the NHS Data Dictionary's
//! attendance codes), HL7's own code systems, the UK Core profiles claimed, and how the
//! pathway's action states and priorities become `Task.status` and `Task.priority`.
//!
//! Everything here is a table: a reviewer reads it beside its source. `docs/fhir.md`
//! prints the same tables for people who do not read Rust.

use episode::pathway::{Priority, State};
use episode::{Method, MissReason};

/// The NHS number's identifier system (UK Core Patient's NHS number slice).
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";

/// The base of every UK Core profile's canonical URL.
pub const UK_CORE: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-";

/// The resource types whose UK Core profile (HL7 UK's UK Core for FHIR R4) the mapping
/// claims in `meta.profile`. Provenance and ClinicalImpression are absent on purpose: the
/// only UK Core Provenance profile we could find is a 2021 draft, and UK Core has no
/// ClinicalImpression profile, so those resources claim the base R4 definition only.
pub const PROFILED: [&str; 9] = [
    "Patient",
    "EpisodeOfCare",
    "Appointment",
    "Encounter",
    "Communication",
    "Task",
    "Flag",
    "CarePlan",
    "ServiceRequest",
];

/// `meta.profile` for a resource type, if UK Core profiles it.
pub fn profile(resource_type: &str) -> Option<String> {
    PROFILED.contains(&resource_type).then(|| format!("{UK_CORE}{resource_type}"))
}

/// One national code: the value, and its description as the Data Dictionary gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NationalCode {
    pub code: &'static str,
    pub display: &'static str,
}

/// NHS Data Dictionary, data element ATTENDED OR DID NOT ATTEND CODE (the attribute
/// ATTENDED OR DID NOT ATTEND), national codes as published:
/// <https://www.datadictionary.nhs.uk/data_elements/attended_or_did_not_attend_code.html>.
/// The same page says it "will be replaced with ATTENDANCE STATUS", which the Mental Health
/// Services, Community Services and Outpatient (CDS V6-3) data sets already use:
/// <https://www.datadictionary.nhs.uk/data_elements/attendance_status.html>. A Tether
/// appointment carries both codings, the same national code in each, so that an EPR on
/// either standard reads it.
pub const ATTENDED_OR_DID_NOT_ATTEND_SYSTEM: &str =
    "https://www.datadictionary.nhs.uk/data_elements/attended_or_did_not_attend_code.html";
/// See [`ATTENDED_OR_DID_NOT_ATTEND_SYSTEM`].
pub const ATTENDANCE_STATUS_SYSTEM: &str = "https://www.datadictionary.nhs.uk/data_elements/attendance_status.html";

/// Every national code of ATTENDED OR DID NOT ATTEND, in the Data Dictionary's order.
pub const ATTENDANCE_CODES: [NationalCode; 7] = [
    ATTENDED,
    NationalCode {
        code: "6",
        display: "Arrived late, after the relevant CARE PROFESSIONAL was ready to see the PATIENT, but was seen",
    },
    NationalCode { code: "7", display: "PATIENT arrived late and could not be seen" },
    NationalCode { code: "2", display: "APPOINTMENT cancelled by, or on behalf of, the PATIENT" },
    DID_NOT_ATTEND,
    NationalCode { code: "4", display: "APPOINTMENT cancelled or postponed by the Health Care Provider" },
    NationalCode { code: "0", display: "Not applicable - APPOINTMENT occurs in the future" },
];

/// Code 5: the patient was seen. Tether's `appointment_attended` does not record whether
/// the patient came late, so an attendance is 5, never 6.
pub const ATTENDED: NationalCode = NationalCode {
    code: "5",
    display: "Attended on time or, if late, before the relevant CARE PROFESSIONAL was ready to see the PATIENT",
};

/// Code 3: every reason Tether records for a missed appointment. The Data Dictionary has
/// no code of its own for a child not brought (WNB): the child did not attend and nobody
/// warned, which is 3; Tether's reason (`not_brought`, `left_before_seen`, …) travels
/// beside it in Tether's own code system, so the EPR keeps the difference. (The Data
/// Dictionary itself files "arrived, but did not wait to be seen" under 3, in its note on
/// colposcopy.) No Tether record means 2, 4 or 7: a cancelled appointment is not recorded
/// as missed, and "arrived late and could not be seen" is not a reason Tether offers.
pub const DID_NOT_ATTEND: NationalCode =
    NationalCode { code: "3", display: "Did not attend - no advance warning given" };

/// The national attendance code of a missed appointment, whatever Tether's reason.
pub fn missed(reason: MissReason) -> NationalCode {
    match reason {
        MissReason::DidNotAttend
        | MissReason::NotBrought
        | MissReason::LeftBeforeSeen
        | MissReason::DischargedAgainstAdvice
        | MissReason::AssessmentRefused => DID_NOT_ATTEND,
    }
}

/// HL7 v3 ParticipationMode: how a communication was made (`Communication.medium`).
pub const PARTICIPATION_MODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode";

/// The medium of a contact attempt: (code, display) in v3 ParticipationMode.
pub fn medium(method: Method) -> (&'static str, &'static str) {
    match method {
        Method::Phone => ("PHONE", "telephone"),
        Method::Sms => ("SMSWRIT", "SMS message"),
        Method::Email => ("EMAILWRIT", "email"),
        Method::Letter | Method::LetterFirstClass => ("MAILWRIT", "mail"),
    }
}

/// HL7's Task status codes (R4 `Task.status`, a required binding), for each state of a
/// pathway action:
///
/// | action state | Task.status | why |
/// |---|---|---|
/// | `upcoming` | `draft` | "not yet ready to be acted upon": it starts at `active_from` |
/// | `open` | `ready` | "ready to be performed, but no action has yet been taken" |
/// | `overdue` | `ready` | still to be done; `businessStatus` says overdue, `restriction.period.end` is past |
/// | `done` | `completed` | `output` names the record that did it; `businessStatus` says "done late" if late |
/// | `cancelled` | `cancelled` | contact (or a discharge) made it unnecessary |
pub fn task_status(state: State) -> &'static str {
    match state {
        State::Upcoming => "draft",
        State::Open | State::Overdue => "ready",
        State::Done => "completed",
        State::Cancelled => "cancelled",
    }
}

/// HL7's request priority (R4 `Task.priority`, a required binding: routine < urgent <
/// asap < stat). Tether's three priorities keep their order: `high` is "urgent" ("actioned
/// promptly"), and Tether's `urgent` — the home treatment hour, telling the police of a
/// risk to life — is "asap" ("as soon as possible, higher priority than urgent").
pub fn task_priority(priority: Priority) -> &'static str {
    match priority {
        Priority::Routine => "routine",
        Priority::High => "urgent",
        Priority::Urgent => "asap",
    }
}

/// HL7 v3 ActCode for `Encounter.class`.
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
/// HL7 v3 DataOperation, for `Provenance.activity`.
pub const DATA_OPERATION: &str = "http://terminology.hl7.org/CodeSystem/v3-DataOperation";
/// HL7's provenance participant types, for `Provenance.agent.type`.
pub const PROVENANCE_PARTICIPANT: &str = "http://terminology.hl7.org/CodeSystem/provenance-participant-type";
/// HL7's flag categories, for `Flag.category`.
pub const FLAG_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/flag-category";
/// HL7 v2 table 0276, appointment reason codes, for `Appointment.appointmentType`.
pub const APPOINTMENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v2-0276";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attended_is_five_and_every_miss_is_three() {
        assert_eq!(ATTENDED.code, "5");
        for reason in [
            MissReason::DidNotAttend,
            MissReason::NotBrought,
            MissReason::LeftBeforeSeen,
            MissReason::DischargedAgainstAdvice,
            MissReason::AssessmentRefused,
        ] {
            assert_eq!(missed(reason).code, "3", "{reason:?}");
            assert_eq!(missed(reason).display, "Did not attend - no advance warning given");
        }
    }

    #[test]
    fn the_attendance_codes_are_the_data_dictionarys_seven_each_once() {
        let mut codes: Vec<&str> = ATTENDANCE_CODES.iter().map(|c| c.code).collect();
        codes.sort_unstable();
        assert_eq!(codes, ["0", "2", "3", "4", "5", "6", "7"]);
        assert!(ATTENDANCE_CODES.contains(&ATTENDED) && ATTENDANCE_CODES.contains(&DID_NOT_ATTEND));
    }

    #[test]
    fn task_statuses_and_priorities_are_r4_codes() {
        const TASK_STATUS: [&str; 12] = [
            "draft",
            "requested",
            "received",
            "accepted",
            "rejected",
            "ready",
            "cancelled",
            "in-progress",
            "on-hold",
            "failed",
            "completed",
            "entered-in-error",
        ];
        for state in [State::Upcoming, State::Open, State::Overdue, State::Done, State::Cancelled] {
            assert!(TASK_STATUS.contains(&task_status(state)), "{state:?}");
        }
        assert_eq!(task_status(State::Overdue), task_status(State::Open), "overdue is still to do");
        let order = ["routine", "urgent", "asap", "stat"];
        let rank = |p| order.iter().position(|o| *o == task_priority(p)).expect("an R4 priority");
        assert!(rank(Priority::Routine) < rank(Priority::High) && rank(Priority::High) < rank(Priority::Urgent));
    }

    #[test]
    fn profiles_are_uk_core_urls() {
        assert_eq!(profile("Patient").as_deref(), Some("https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"));
        assert_eq!(profile("Provenance"), None);
    }
}
