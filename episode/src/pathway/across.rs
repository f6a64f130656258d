//! The rules across pathways (5.4 to 5.7, and filing), and the warnings.
//!
//! Some rows here are raised "with" a moment of a pathway (an escalation, the 24-hour
//! notifications, an MDT): the pathway modules call them at that moment. The rest
//! [`apply`] raises for every episode.

use super::engine::{Ctx, Cycle, DoneBy, Out, Raise, Trigger};
use super::records::*;
use super::{Code, Priority, Role, WarningCode};
use crate::model::{EventBody, FactField, FactValue, Safeguarding};

/// Offer another appointment the same day as the first contact after T (†). Survives
/// contact (it is raised by one).
pub(crate) fn offer_appointment(
    cx: &Ctx<'_>,
    out: &mut Out,
    c: &Cycle<'_>,
    contact: &crate::model::Event,
    cites: &'static str,
    owner: Role,
) {
    out.raise(
        cx,
        Raise {
            code: Code::OfferAppointment,
            cites,
            owner,
            priority: Priority::High,
            cycle: Some(c),
            trigger: contact.into(),
            survives_contact: true,
            active_from: contact.at,
            due: cx.defaults.offer_appointment,
            done_by: DoneBy::Any(appointment_offered),
        },
    );
}

/// 5.4: consider a Mental Health Act assessment, the same day (†) as the escalation
/// (5.2, A), the 24-hour notifications (5.1.1) or the MDT (5.3).
pub(crate) fn consider_mha_assessment(
    cx: &Ctx<'_>,
    out: &mut Out,
    c: &Cycle<'_>,
    trigger: Trigger,
    from: jiff::Timestamp,
    cites: &'static str,
    owner: Role,
) {
    out.raise(
        cx,
        Raise {
            code: Code::ConsiderMhaAssessment,
            cites,
            owner,
            priority: Priority::High,
            cycle: Some(c),
            trigger,
            survives_contact: false,
            active_from: from,
            due: cx.defaults.consider_mha_assessment,
            done_by: DoneBy::Any(decided_mha_assessment),
        },
    );
}

/// 5.4: with a community treatment order or a conditional discharge, consider recall
/// at the same moments as a Mental Health Act assessment (and at T in home treatment),
/// the same day (†). Owned by the responsible clinician. Survives contact.
pub(crate) fn consider_recall(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, trigger: Trigger, from: jiff::Timestamp) {
    if !cx.facts.recallable() {
        return;
    }
    out.raise(
        cx,
        Raise {
            code: Code::ConsiderRecall,
            cites: "5.4",
            owner: Role::ResponsibleClinician,
            priority: Priority::High,
            cycle: Some(c),
            trigger,
            survives_contact: true,
            active_from: from,
            due: cx.defaults.consider_recall,
            done_by: DoneBy::Any(decided_recall),
        },
    );
}

/// 5.6: arrange an MDT meeting from the moment of `trigger`.
pub(crate) fn arrange_mdt(cx: &Ctx<'_>, out: &mut Out, c: &Cycle<'_>, trigger: Trigger, cites: &'static str) {
    arrange_mdt_from(cx, out, c, trigger, trigger.at, cites);
}

/// 5.6: arrange an MDT meeting within 5 working days (†), or 1 (†) when the risk is
/// high ("urgency determined by the information available"). Done by an MDT meeting
/// with a senior clinician and the team manager; a meeting without them leaves it open
/// with the warning `mdt_quorum`. Survives contact.
pub(crate) fn arrange_mdt_from(
    cx: &Ctx<'_>,
    out: &mut Out,
    c: &Cycle<'_>,
    trigger: Trigger,
    from: jiff::Timestamp,
    cites: &'static str,
) {
    let due = if cx.facts.high_risk() { cx.defaults.arrange_mdt_high_risk } else { cx.defaults.arrange_mdt };
    out.raise(
        cx,
        Raise {
            code: Code::ArrangeMdt,
            cites,
            owner: Role::TeamManager,
            priority: Priority::High,
            cycle: Some(c),
            trigger,
            survives_contact: true,
            active_from: from,
            due,
            done_by: DoneBy::Any(quorate_mdt),
        },
    );
}

/// The rules that every episode gets, whatever its pathway, and the warnings.
pub(crate) fn apply(cx: &Ctx<'_>, out: &mut Out) {
    leave_calling_card(cx, out);
    after_mdt(cx, out);
    if cx.facts.safeguarding != Safeguarding::None {
        discuss_safeguarding(cx, out);
    }
    if cx.facts.known_disengager {
        plan_for_disengagement(cx, out);
    }
    file_to_epr(cx, out);
    warnings(cx, out);
}

/// 5.1.1, A: each unannounced home visit with no answer or the patient not at the
/// address, in any pathway: leave a calling card within 1 hour (†) asking the patient to
/// get in touch. Done by a `calling_card_left` naming the visit. Survives contact.
fn leave_calling_card(cx: &Ctx<'_>, out: &mut Out) {
    for visit in cx.events.iter().copied().filter(|e| unanswered_unannounced_visit(e)) {
        out.raise(
            cx,
            Raise {
                code: Code::LeaveCallingCard,
                cites: "5.1.1, A",
                owner: Role::Visitor,
                priority: Priority::High,
                cycle: None,
                trigger: visit.into(),
                survives_contact: true,
                active_from: visit.at,
                due: cx.defaults.leave_calling_card,
                done_by: DoneBy::CardFor(visit.id),
            },
        );
    }
}

/// 5.6: after each MDT meeting, share its plan with the GP, other agencies and the
/// family within 2 working days (†); after one that decides discharge, tell the GP and
/// discharge with the crisis plan within 2 working days (†). All survive contact.
fn after_mdt(cx: &Ctx<'_>, out: &mut Out) {
    const SHARE: &[Is] = &[told_gp, other_agencies_told, family_told_of_plan];
    for meeting in cx.events.iter().copied() {
        let Some(mdt) = mdt_meeting(meeting) else { continue };
        let mut rows = vec![(Code::ShareMdtPlan, cx.defaults.share_mdt_plan, DoneBy::All(SHARE))];
        if mdt.outcome == crate::model::MdtOutcome::Discharge {
            rows.push((Code::InformGpOfDischarge, cx.defaults.discharge_after_mdt, DoneBy::Any(told_gp)));
            rows.push((
                Code::SendDischargeLetter,
                cx.defaults.discharge_after_mdt,
                DoneBy::Any(discharged_with_crisis_plan),
            ));
        }
        for (code, due, done_by) in rows {
            out.raise(
                cx,
                Raise {
                    code,
                    cites: "5.6",
                    owner: Role::CareCoordinator,
                    priority: Priority::Routine,
                    cycle: None,
                    trigger: meeting.into(),
                    survives_contact: true,
                    active_from: meeting.at,
                    due,
                    done_by,
                },
            );
        }
    }
}

/// 5.5: a safeguarding concern: discuss it with the safeguarding nurse and the team
/// manager the same day (†) if it includes a child, else within 1 working day (†), from
/// when the concern was recorded. Survives contact.
fn discuss_safeguarding(cx: &Ctx<'_>, out: &mut Out) {
    const DONE: &[Is] = &[told_safeguarding_nurse, told_team_manager];
    let concern = cx.facts.safeguarding;
    let trigger = cx.fact_since(FactField::Safeguarding, &FactValue::Safeguarding(concern));
    let due = if concern.includes_child() {
        cx.defaults.discuss_safeguarding_child
    } else {
        cx.defaults.discuss_safeguarding_adult
    };
    out.raise(
        cx,
        Raise {
            code: Code::DiscussSafeguarding,
            cites: "5.5",
            owner: Role::CareCoordinator,
            priority: Priority::High,
            cycle: None,
            trigger,
            survives_contact: true,
            active_from: trigger.at,
            due,
            done_by: DoneBy::All(DONE),
        },
    );
}

/// 5.7: a patient known or assessed to disengage and re-engage: make a plan for it
/// within 10 working days (†) of opening, or of when it was recorded.
fn plan_for_disengagement(cx: &Ctx<'_>, out: &mut Out) {
    let trigger = cx.flag_since(FactField::KnownDisengager);
    out.raise(
        cx,
        Raise {
            code: Code::PlanForDisengagement,
            cites: "5.7",
            owner: Role::CareCoordinator,
            priority: Priority::Routine,
            cycle: None,
            trigger,
            survives_contact: true,
            active_from: trigger.at,
            due: cx.defaults.plan_for_disengagement,
            done_by: DoneBy::Any(decided_disengagement_plan),
        },
    );
}

/// 5 ("all actions recorded in the EPR"): each record not yet in a `filed_to_epr`,
/// within 1 working day of the record (†), by the team base.
///
/// A record entered in error is not filed; its `entered_in_error` is filed only if the
/// record itself had been, so that the EPR is corrected, and an unfiled mistake leaves
/// nothing behind.
fn file_to_epr(cx: &Ctx<'_>, out: &mut Out) {
    for record in cx.events.iter().copied() {
        match &record.body {
            EventBody::FiledToEpr(_) => continue,
            EventBody::EnteredInError(eie) if !cx.is_filed(eie.record) => continue,
            _ => {}
        }
        out.raise_inline(
            cx,
            Raise {
                code: Code::FileToEpr,
                cites: "5",
                owner: Role::TeamBase,
                priority: Priority::Routine,
                cycle: None,
                trigger: record.into(),
                survives_contact: true,
                active_from: record.at,
                due: cx.defaults.file_to_epr,
                done_by: DoneBy::Filed(record.id),
            },
        );
    }
}

fn warnings(cx: &Ctx<'_>, out: &mut Out) {
    for (field, values) in cx.episode.facts.conflicts() {
        let shown: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        out.warn(
            WarningCode::FactConflict,
            format!(
                "devices set `{field}` to different values ({}): the rules use the safer one until it is set again",
                shown.join(", ")
            ),
            Some(field),
            None,
        );
    }
    for invalid in &cx.episode.invalid_records {
        out.warn(
            WarningCode::InvalidRecord,
            format!("a record failed validation and is left out of the rules: {}", invalid.error),
            None,
            Some(invalid.id.clone()),
        );
    }
    for e in cx.events.iter().copied() {
        if let Some(received) = e.received_at
            && e.at.duration_since(received) > jiff::SignedDuration::from_mins(5)
        {
            out.warn(
                WarningCode::ClockSkew,
                "the record's time is more than 5 minutes after the server received it: check the device's clock"
                    .into(),
                None,
                Some(e.id.to_string()),
            );
        }
        match &e.body {
            EventBody::MdtMeeting(m) if !m.is_quorate() => out.warn(
                WarningCode::MdtQuorum,
                "the MDT meeting had no senior clinician or no team manager (5.6): it does not count as the MDT".into(),
                None,
                Some(e.id.to_string()),
            ),
            EventBody::Discharged(d) => {
                if !d.crisis_plan_sent {
                    out.warn(
                        WarningCode::DischargeWithoutCrisisPlan,
                        "the patient was discharged without the crisis plan being sent (5.6)".into(),
                        None,
                        Some(e.id.to_string()),
                    );
                }
                let mdt_decided = cx.events.iter().any(|m| {
                    (m.at, m.id) <= (e.at, e.id)
                        && mdt_meeting(m).is_some_and(|m| m.outcome == crate::model::MdtOutcome::Discharge)
                });
                if !mdt_decided && !out.was_resolved_by(Code::DischargePerCpa, e.id) {
                    out.warn(
                        WarningCode::DischargeWithoutMdt,
                        "the patient was discharged without an MDT decision to discharge (5.6), and not as a discharge under CPA".into(),
                        None,
                        Some(e.id.to_string()),
                    );
                }
            }
            _ => {}
        }
    }
}
