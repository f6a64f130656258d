//! What a record counts as, in the words of the rule table's "done by" column.
//!
//! Each function answers one question about one record ("is this a phone call to the
//! patient?"), so a rule's "done by" reads as the table's column does.

use crate::model::*;

/// A question about one record, as a table's "done by" column asks it.
pub(crate) type Is = fn(&Event) -> bool;

/// **Contact** ("Events"): a `contact_attempt` to the patient (or, for a child, the
/// parent or carer) with outcome `contact_made`, a `home_visit` with outcome `seen`, an
/// `appointment_attended` or a `reengaged`. Reaching a family member is not contact.
pub(crate) fn is_contact(e: &Event, child: bool) -> bool {
    match &e.body {
        EventBody::ContactAttempt(a) => {
            a.outcome == Outcome::ContactMade
                && (a.target == Target::Patient || (child && a.target == Target::ParentCarer))
        }
        EventBody::HomeVisit(v) => v.outcome == VisitOutcome::Seen,
        EventBody::AppointmentAttended(_) | EventBody::Reengaged(_) => true,
        _ => false,
    }
}

fn attempt(e: &Event) -> Option<&ContactAttempt> {
    match &e.body {
        EventBody::ContactAttempt(a) => Some(a),
        _ => None,
    }
}

fn told(e: &Event, parties: &[Party]) -> bool {
    matches!(&e.body, EventBody::Communication(c) if parties.contains(&c.party))
}

fn decided(e: &Event, topic: Topic) -> bool {
    matches!(&e.body, EventBody::Decision(d) if d.topic == topic)
}

fn referred(e: &Event, to: &[ReferralTo]) -> bool {
    matches!(&e.body, EventBody::ReferralMade(r) if to.contains(&r.to))
}

// Appointments.

pub(crate) fn missed(e: &Event) -> bool {
    matches!(e.body, EventBody::AppointmentMissed(_))
}

pub(crate) fn missed_initial(e: &Event) -> bool {
    matches!(&e.body, EventBody::AppointmentMissed(m) if m.appointment == Appointment::Initial)
}

/// `appointment_booked`, or a decision `alternative_appointment`.
pub(crate) fn appointment_offered(e: &Event) -> bool {
    matches!(e.body, EventBody::AppointmentBooked(_)) || decided(e, Topic::AlternativeAppointment)
}

// Contact attempts.

/// Any `contact_attempt` to the patient.
pub(crate) fn attempt_to_patient(e: &Event) -> bool {
    attempt(e).is_some_and(|a| a.target == Target::Patient)
}

/// A `contact_attempt` by `phone` to the patient.
pub(crate) fn phone_to_patient(e: &Event) -> bool {
    attempt(e).is_some_and(|a| a.method == Method::Phone && a.target == Target::Patient)
}

/// A phone call to the patient with any outcome but `contact_made`.
pub(crate) fn failed_phone_to_patient(e: &Event) -> bool {
    phone_to_patient(e) && attempt(e).is_some_and(|a| a.outcome != Outcome::ContactMade)
}

/// A `contact_attempt` by `phone` to the patient or a `named_contact` (A).
pub(crate) fn phone_to_patient_or_named_contact(e: &Event) -> bool {
    attempt(e).is_some_and(|a| a.method == Method::Phone && matches!(a.target, Target::Patient | Target::NamedContact))
}

/// A letter of either kind to the patient.
pub(crate) fn letter_to_patient(e: &Event) -> bool {
    attempt(e).is_some_and(|a| a.is_letter() && a.target == Target::Patient)
}

/// 5.1.2: a first-class letter to the patient asking them to get in touch.
pub(crate) fn first_class_request_contact_letter(e: &Event) -> bool {
    attempt(e).is_some_and(|a| {
        a.method == Method::LetterFirstClass && a.target == Target::Patient && a.letter == Some(Letter::RequestContact)
    })
}

/// 5.3: a letter to the patient warning of discharge.
pub(crate) fn discharge_warning_letter(e: &Event) -> bool {
    letter_to_patient(e) && attempt(e).is_some_and(|a| a.letter == Some(Letter::DischargeWarning))
}

/// WNB: a "was not brought" letter to the parent or carer.
pub(crate) fn was_not_brought_letter(e: &Event) -> bool {
    attempt(e)
        .is_some_and(|a| a.is_letter() && a.target == Target::ParentCarer && a.letter == Some(Letter::WasNotBrought))
}

/// A `contact_attempt` (any method, any outcome) to family, carers or named contacts.
pub(crate) fn attempt_to_family(e: &Event) -> bool {
    attempt(e).is_some_and(|a| a.target.is_family())
}

/// `contact_family_carers` is done: an attempt to family, or a decision `family_contact`.
pub(crate) fn family_contact_considered(e: &Event) -> bool {
    attempt_to_family(e) || decided(e, Topic::FamilyContact)
}

/// A text or email to the patient.
pub(crate) fn electronic_to_patient(e: &Event) -> bool {
    attempt(e).is_some_and(|a| matches!(a.method, Method::Sms | Method::Email) && a.target == Target::Patient)
}

/// An attempt to another provider, or a decision `other_providers`.
pub(crate) fn other_providers_contacted(e: &Event) -> bool {
    attempt(e).is_some_and(|a| a.target == Target::OtherProvider) || decided(e, Topic::OtherProviders)
}

// Visits.

pub(crate) fn unannounced_visit(e: &Event) -> bool {
    matches!(&e.body, EventBody::HomeVisit(v) if !v.announced)
}

/// An unannounced visit at which the patient was not seen.
pub(crate) fn unannounced_visit_without_contact(e: &Event) -> bool {
    matches!(&e.body, EventBody::HomeVisit(v) if !v.announced && v.outcome != VisitOutcome::Seen)
}

/// A visit at which nobody answered or the patient was not there: a card is due.
pub(crate) fn unanswered_unannounced_visit(e: &Event) -> bool {
    matches!(&e.body, EventBody::HomeVisit(v)
        if !v.announced && matches!(v.outcome, VisitOutcome::NoAnswer | VisitOutcome::NotAtAddress))
}

/// Any visit at which the patient was not seen (A's trigger).
pub(crate) fn visit_without_contact(e: &Event) -> bool {
    matches!(&e.body, EventBody::HomeVisit(v) if v.outcome != VisitOutcome::Seen)
}

/// An unannounced visit, or a decision `cold_call`.
pub(crate) fn cold_call_considered(e: &Event) -> bool {
    unannounced_visit(e) || decided(e, Topic::ColdCall)
}

// Communications.

pub(crate) fn told_police(e: &Event) -> bool {
    told(e, &[Party::Police])
}

pub(crate) fn told_referrer(e: &Event) -> bool {
    told(e, &[Party::Referrer])
}

pub(crate) fn told_referrer_by_phone(e: &Event) -> bool {
    matches!(&e.body, EventBody::Communication(c) if c.party == Party::Referrer && c.channel == Channel::Phone)
}

pub(crate) fn told_referrer_in_writing(e: &Event) -> bool {
    matches!(&e.body, EventBody::Communication(c) if c.party == Party::Referrer && c.channel == Channel::Writing)
}

pub(crate) fn told_gp(e: &Event) -> bool {
    told(e, &[Party::Gp])
}

/// A communication to another agency, or a decision `other_agencies`.
pub(crate) fn other_agencies_told(e: &Event) -> bool {
    told(e, &[Party::OtherAgency]) || decided(e, Topic::OtherAgencies)
}

pub(crate) fn told_team_manager(e: &Event) -> bool {
    told(e, &[Party::TeamManager])
}

/// A: the team manager, the service manager or the on-call manager.
pub(crate) fn told_a_manager_on_call(e: &Event) -> bool {
    told(e, &[Party::TeamManager, Party::ServiceManager, Party::OnCallManager])
}

pub(crate) fn told_safeguarding_children_team(e: &Event) -> bool {
    told(e, &[Party::SafeguardingChildrenTeam])
}

/// 5.1.1: one of the team manager, a line manager or the safeguarding supervisor.
pub(crate) fn told_manager_or_supervisor(e: &Event) -> bool {
    told(e, &[Party::TeamManager, Party::LineManager, Party::SafeguardingSupervisor])
}

/// 5.2: one of the team manager, a line manager, the safeguarding supervisor or the
/// safeguarding children team.
pub(crate) fn told_about_parenting(e: &Event) -> bool {
    told(e, &[Party::TeamManager, Party::LineManager, Party::SafeguardingSupervisor, Party::SafeguardingChildrenTeam])
}

pub(crate) fn told_safeguarding_nurse(e: &Event) -> bool {
    told(e, &[Party::SafeguardingNurse])
}

pub(crate) fn told_childrens_services(e: &Event) -> bool {
    told(e, &[Party::ChildrensServices])
}

/// 5.2: a health visitor, school nurse, GP, education or Children's Services.
pub(crate) fn communication_to_childrens_services_partner(e: &Event) -> bool {
    told(e, &[Party::HealthVisitor, Party::SchoolNurse, Party::Gp, Party::Education, Party::ChildrensServices])
}

/// 5.6: the family or carer told of the plan, or a decision `share_plan_with_family`.
pub(crate) fn family_told_of_plan(e: &Event) -> bool {
    told(e, &[Party::FamilyCarer]) || decided(e, Topic::SharePlanWithFamily)
}

// Decisions.

pub(crate) fn decided_joint_plan(e: &Event) -> bool {
    decided(e, Topic::JointPlan)
}

pub(crate) fn decided_mha_assessment(e: &Event) -> bool {
    decided(e, Topic::MhaAssessment)
}

pub(crate) fn decided_recall(e: &Event) -> bool {
    decided(e, Topic::Recall)
}

pub(crate) fn decided_police_support(e: &Event) -> bool {
    decided(e, Topic::PoliceSupport)
}

/// A: a decision `police_support`, or the police told.
pub(crate) fn police_support_considered(e: &Event) -> bool {
    decided(e, Topic::PoliceSupport) || told_police(e)
}

/// A decision `intensive_support`, or a referral to home treatment or assertive outreach.
pub(crate) fn intensive_support_considered(e: &Event) -> bool {
    decided(e, Topic::IntensiveSupport) || referred(e, &[ReferralTo::HomeTreatment, ReferralTo::AssertiveOutreach])
}

/// A decision `onward_referral`, or a referral to another service.
pub(crate) fn onward_referral_considered(e: &Event) -> bool {
    decided(e, Topic::OnwardReferral) || referred(e, &[ReferralTo::AnotherService])
}

pub(crate) fn decided_parenting_impact(e: &Event) -> bool {
    decided(e, Topic::ParentingImpact)
}

pub(crate) fn decision_childrens_services_known(e: &Event) -> bool {
    decided(e, Topic::ChildrensServicesKnown)
}

pub(crate) fn decided_impact_on_child(e: &Event) -> bool {
    decided(e, Topic::ImpactOnChild)
}

pub(crate) fn decided_disengagement_plan(e: &Event) -> bool {
    decided(e, Topic::DisengagementPlan)
}

// Referrals, assessments, meetings, discharge, filing.

pub(crate) fn referred_to_community_treatment_team(e: &Event) -> bool {
    referred(e, &[ReferralTo::CommunityTreatmentTeam])
}

/// A referral to Children's Services. The guidance expects the reason
/// `neglect_of_health_needs`; a referral for any reason reaches Children's Services, so
/// any reason counts.
pub(crate) fn referred_to_childrens_services(e: &Event) -> bool {
    referred(e, &[ReferralTo::ChildrensServices])
}

/// A full transfer of care to assertive outreach (5.2).
pub(crate) fn transfer_to_assertive_outreach(e: &Event) -> bool {
    matches!(&e.body, EventBody::ReferralMade(r) if r.to == ReferralTo::AssertiveOutreach && r.transfer)
}

pub(crate) fn assessment_completed(e: &Event) -> bool {
    matches!(e.body, EventBody::AssessmentCompleted(_))
}

pub(crate) fn mdt_meeting(e: &Event) -> Option<&MdtMeeting> {
    match &e.body {
        EventBody::MdtMeeting(m) => Some(m),
        _ => None,
    }
}

/// An MDT meeting with a senior clinician and the team manager (5.6).
pub(crate) fn quorate_mdt(e: &Event) -> bool {
    mdt_meeting(e).is_some_and(MdtMeeting::is_quorate)
}

pub(crate) fn discharged(e: &Event) -> bool {
    matches!(e.body, EventBody::Discharged(_))
}

pub(crate) fn discharged_with_crisis_plan(e: &Event) -> bool {
    matches!(&e.body, EventBody::Discharged(d) if d.crisis_plan_sent)
}

/// A contact attempt to the patient with any outcome but `contact_made`.
pub(crate) fn failed_attempt_to_patient(e: &Event) -> bool {
    attempt(e).is_some_and(|a| a.target == Target::Patient && a.outcome != Outcome::ContactMade)
}

/// What a contact that reached the patient found: deterioration and wishes.
pub(crate) fn contact_findings(e: &Event) -> Option<(Option<Deterioration>, Option<bool>)> {
    attempt(e).filter(|a| a.outcome == Outcome::ContactMade).map(|a| (a.deterioration, a.wishes_discharge))
}
