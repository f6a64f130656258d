//! The rules across pathways (5.4 to 5.7, and filing), and the warnings.
//!
//! Some rows here are raised "with" a moment of a pathway (an escalation, the 24-hour
//! notifications, an MDT): the pathway modules call them at that moment. The rest
//! [`apply`] raises for every episode.

use super::engine::{Ctx, Out, Raise, Trigger};
use super::records::*;
use super::table::{Done, Due, Owner, Rule, local};
use super::{Code, Priority, Role, Warning, WarningCode};
use crate::model::{Event, EventBody, FactField, FactValue, LegalStatus, MdtOutcome, Safeguarding};

/// This section's rows, in the policy's order.
pub(super) static RULES: &[&Rule] = &[
    &LEAVE_CALLING_CARD,
    &SHARE_MDT_PLAN,
    &INFORM_GP_OF_DISCHARGE,
    &SEND_DISCHARGE_LETTER,
    &CONSIDER_RECALL,
    &DISCUSS_SAFEGUARDING,
    &DISCUSS_SAFEGUARDING_CHILD,
    &PLAN_FOR_DISENGAGEMENT,
    &FILE_TO_EPR,
];

/// Offer another appointment the same day as the first contact after T (†): each
/// pathway's own row. Survives contact (it is raised by one); a discharge cancels it.
pub(crate) fn offer_appointment(
    cx: &Ctx<'_>,
    out: &mut Out,
    rule: &'static Rule,
    c: &super::engine::Cycle<'_>,
    contact: &Event,
) {
    out.raise(cx, rule, Raise::new(Some(c), contact.into(), contact.at));
}

static CONSIDER_RECALL: Rule = Rule {
    code: Code::ConsiderRecall,
    when: "`legal_status` `cto` or `conditional_discharge`, at the same moments as `consider_mha_assessment` \
           (and at T in home treatment), or from the `fact_changed` that set it if later",
    due: Due::Local(local!(consider_recall)),
    done_by: "decision `recall`",
    owner: Owner::Role(Role::ResponsibleClinician),
    priority: Priority::High,
    cites: "5.4",
    survives_contact: true,
    done: Done::Any(decided_recall),
};

/// 5.4: with a community treatment order or a conditional discharge, consider recall
/// at the same moments as a Mental Health Act assessment (and at T in home treatment),
/// the same day (†), or from when the status was recorded if later. Owned by the
/// responsible clinician. Survives contact.
pub(crate) fn consider_recall(cx: &Ctx<'_>, out: &mut Out, raise: Raise<'_>) {
    if !cx.facts.recallable() {
        return;
    }
    let since = cx.since(FactField::LegalStatus, |v| {
        matches!(v, FactValue::LegalStatus(LegalStatus::Cto | LegalStatus::ConditionalDischarge))
    });
    out.raise(cx, &CONSIDER_RECALL, raise.learnt(since));
}

/// 5.6: arrange an MDT meeting within 5 working days (†), or 1 (†) when the risk is
/// high or the pathway is home treatment ("urgency determined by the information
/// available"): each pathway's own row, raised at its moment. Done by an MDT meeting
/// with a senior clinician and the team manager; a meeting without them leaves it open
/// with the warning `mdt_quorum`. Survives contact.
pub(crate) fn arrange_mdt(
    cx: &Ctx<'_>,
    out: &mut Out,
    rule: &'static Rule,
    raise: Raise<'_>,
) -> super::engine::Settled {
    out.raise(cx, rule, raise.instead(cx.facts.high_risk()))
}

/// The deadline of every `arrange_mdt` row (5.6).
pub(crate) const ARRANGE_MDT_DUE: Due = Due::Either {
    usual: local!(arrange_mdt),
    instead: local!(arrange_mdt_high_risk),
    condition: "if `risk` is high or the pathway is `home_treatment`",
};

/// What does every `arrange_mdt` row (5.6).
pub(crate) const ARRANGE_MDT_DONE_BY: &str =
    "`mdt_meeting` whose attendees include `senior_clinician` and `team_manager` (else warning `mdt_quorum`)";

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

static LEAVE_CALLING_CARD: Rule = Rule {
    code: Code::LeaveCallingCard,
    when: "each unannounced `home_visit` with `no_answer` or `not_at_address`, in any pathway",
    due: Due::Local(local!(leave_calling_card)),
    done_by: "`calling_card_left` naming the visit",
    owner: Owner::Role(Role::Visitor),
    priority: Priority::High,
    cites: "5.1.1, A",
    survives_contact: true,
    done: Done::CardForTheVisit,
};

/// 5.1.1, A: each unannounced home visit with no answer or the patient not at the
/// address, in any pathway: leave a calling card within 1 hour (†) asking the patient to
/// get in touch. Done by a `calling_card_left` naming the visit. Survives contact.
fn leave_calling_card(cx: &Ctx<'_>, out: &mut Out) {
    for visit in cx.events.iter().copied().filter(|e| unanswered_unannounced_visit(e)) {
        out.raise(cx, &LEAVE_CALLING_CARD, Raise::new(None, visit.into(), visit.at));
    }
}

static SHARE_MDT_PLAN: Rule = Rule {
    code: Code::ShareMdtPlan,
    when: "each `mdt_meeting`",
    due: Due::Local(local!(share_mdt_plan)),
    done_by: "`communication` to `gp`, and to `other_agency` or decision `other_agencies`, and to `family_carer` \
              or decision `share_plan_with_family`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::Routine,
    cites: "5.6",
    survives_contact: true,
    done: Done::All(&[told_gp, other_agencies_told, family_told_of_plan]),
};

static INFORM_GP_OF_DISCHARGE: Rule = Rule {
    code: Code::InformGpOfDischarge,
    when: "each `mdt_meeting` with `outcome: discharge`",
    due: Due::Local(local!(discharge_after_mdt)),
    done_by: "`communication` to `gp`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::Routine,
    cites: "5.6",
    survives_contact: true,
    done: Done::Any(told_gp),
};

static SEND_DISCHARGE_LETTER: Rule = Rule {
    code: Code::SendDischargeLetter,
    when: "each `mdt_meeting` with `outcome: discharge`",
    due: Due::Local(local!(discharge_after_mdt)),
    done_by: "`discharged` with `crisis_plan_sent: true`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::Routine,
    cites: "5.6",
    survives_contact: true,
    done: Done::Any(discharged_with_crisis_plan),
};

/// 5.6: after each MDT meeting, share its plan with the GP, other agencies and the
/// family within 2 working days (†); after one that decides discharge, tell the GP and
/// discharge with the crisis plan within 2 working days (†). All survive contact.
fn after_mdt(cx: &Ctx<'_>, out: &mut Out) {
    for meeting in cx.events.iter().copied() {
        let Some(mdt) = mdt_meeting(meeting) else { continue };
        out.raise(cx, &SHARE_MDT_PLAN, Raise::new(None, meeting.into(), meeting.at));
        if mdt.outcome == MdtOutcome::Discharge {
            out.raise(cx, &INFORM_GP_OF_DISCHARGE, Raise::new(None, meeting.into(), meeting.at));
            out.raise(cx, &SEND_DISCHARGE_LETTER, Raise::new(None, meeting.into(), meeting.at));
        }
    }
}

static DISCUSS_SAFEGUARDING: Rule = Rule {
    code: Code::DiscussSafeguarding,
    when: "`safeguarding` not `none`: at opening, or from the `fact_changed` that set it",
    due: Due::Either {
        usual: local!(discuss_safeguarding_adult),
        instead: local!(discuss_safeguarding_child),
        condition: "if it includes a child",
    },
    done_by: "`communication`s to `safeguarding_nurse` and to `team_manager`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.5",
    survives_contact: true,
    done: Done::All(&[told_safeguarding_nurse, told_team_manager]),
};

static DISCUSS_SAFEGUARDING_CHILD: Rule = Rule {
    code: Code::DiscussSafeguarding,
    when: "`safeguarding` came to include a child after an adult concern was set: from the `fact_changed` that \
           added the child",
    due: Due::Local(local!(discuss_safeguarding_child)),
    done_by: "`communication`s to `safeguarding_nurse` and to `team_manager`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::High,
    cites: "5.5",
    survives_contact: true,
    done: Done::All(&[told_safeguarding_nurse, told_team_manager]),
};

/// 5.5: a safeguarding concern: discuss it with the safeguarding nurse and the team
/// manager the same day (†) if it includes a child, else within 1 working day (†),
/// from the opening or the record that set it. Survives contact.
///
/// Reading: a concern for a child added to an adult one already recorded is discussed
/// again, the same day, from the record that added it; the adult concern's discussion
/// stays owed as it was (neither is lost by the other).
fn discuss_safeguarding(cx: &Ctx<'_>, out: &mut Out) {
    let concern =
        cx.since(FactField::Safeguarding, |v| matches!(v, FactValue::Safeguarding(s) if *s != Safeguarding::None));
    let child =
        cx.facts.safeguarding.includes_child().then(|| {
            cx.since(FactField::Safeguarding, |v| matches!(v, FactValue::Safeguarding(s) if s.includes_child()))
        });
    match child {
        Some(child) if child.id != concern.id && child.at >= concern.at => {
            out.raise(cx, &DISCUSS_SAFEGUARDING, Raise::new(None, concern, concern.at));
            out.raise(cx, &DISCUSS_SAFEGUARDING_CHILD, Raise::new(None, child, child.at));
        }
        _ => {
            let raise = Raise::new(None, concern, concern.at).instead(child.is_some());
            out.raise(cx, &DISCUSS_SAFEGUARDING, raise);
        }
    }
}

static PLAN_FOR_DISENGAGEMENT: Rule = Rule {
    code: Code::PlanForDisengagement,
    when: "`known_disengager`: at opening, or from the `fact_changed` that set it",
    due: Due::Local(local!(plan_for_disengagement)),
    done_by: "decision `disengagement_plan`",
    owner: Owner::Role(Role::CareCoordinator),
    priority: Priority::Routine,
    cites: "5.7",
    survives_contact: true,
    done: Done::Any(decided_disengagement_plan),
};

/// 5.7: a patient known or assessed to disengage and re-engage: make a plan for it
/// within 10 working days (†) of opening, or of when it was recorded.
fn plan_for_disengagement(cx: &Ctx<'_>, out: &mut Out) {
    let since = cx.flag_since(FactField::KnownDisengager);
    out.raise(cx, &PLAN_FOR_DISENGAGEMENT, Raise::new(None, since, since.at));
}

static FILE_TO_EPR: Rule = Rule {
    code: Code::FileToEpr,
    when: "each record but a `filed_to_epr` (an `entered_in_error` only if the record it names was filed)",
    due: Due::Local(local!(file_to_epr)),
    done_by: "`filed_to_epr` listing it",
    owner: Owner::Role(Role::TeamBase),
    priority: Priority::Routine,
    cites: "5",
    survives_contact: true,
    done: Done::FilingOfTheRecord,
};

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
        out.raise_inline(cx, &FILE_TO_EPR, Raise::new(None, record.into(), record.at));
    }
}

/// "A discharge": a `discharged` after which an action raised at or before it, other
/// than `file_to_epr`, is still owed (`owed`: upcoming, open or overdue at `now`) warns
/// `discharge_with_open_actions`, naming their codes. A discharge cancels only
/// `offer_appointment`: the rest stays owed, and this says so where the discharge is.
///
/// Reading: `upcoming` counts as owed as well as `open` and `overdue`: an action that
/// will fall due after the discharge is as much forgotten by it.
pub(crate) fn discharge_with_open_actions(cx: &Ctx<'_>, owed: &[(Trigger, Code)], warnings: &mut Vec<Warning>) {
    for discharge in cx.events.iter().copied().filter(|e| discharged(e)) {
        let mut codes: Vec<&str> = owed
            .iter()
            .filter(|(trigger, code)| {
                *code != Code::FileToEpr && (trigger.at, trigger.id) <= (discharge.at, *discharge.id.as_uuid())
            })
            .map(|(_, code)| code.as_str())
            .collect();
        if codes.is_empty() {
            continue;
        }
        codes.sort_unstable();
        codes.dedup();
        warnings.push(Warning {
            code: WarningCode::DischargeWithOpenActions,
            message: format!(
                "the patient was discharged with actions still owed, which the discharge does not end: {}",
                codes.join(", ")
            ),
            field: None,
            record: Some(discharge.id.to_string()),
        });
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
                // Only a quorate MDT decides (5.6): one without a senior clinician and the
                // team manager is no decision to discharge.
                let mdt_decided = cx.events.iter().any(|m| {
                    (m.at, m.id) <= (e.at, e.id)
                        && mdt_meeting(m).is_some_and(|m| m.outcome == MdtOutcome::Discharge && m.is_quorate())
                });
                if !mdt_decided && !out.was_resolved_by(Code::DischargePerCpa, e.id) {
                    out.warn(
                        WarningCode::DischargeWithoutMdt,
                        "the patient was discharged without a decision to discharge by a quorate MDT (5.6), and not as a discharge under CPA".into(),
                        None,
                        Some(e.id.to_string()),
                    );
                }
            }
            _ => {}
        }
    }
}
