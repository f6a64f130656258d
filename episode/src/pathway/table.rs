//! The rule table: one [`Rule`] per row of the policy's tables, stated once.
//!
//! Each pathway module declares its rows as `static` rules beside the functions that
//! raise them, and the engine takes an action's code, owner, priority, cites, deadline,
//! whether it survives contact and what does it from the rule it is raised by. This
//! module lists those same statics, section by section, and prints them for
//! `tether pathway rules` and the clinical safety officer (`docs/rules.md` is that
//! print, kept in the repository and checked against it by a test).

use std::fmt::Write;

use super::records::Is;
use super::{Code, Deadline, Defaults, Priority, Role};

/// One row of a table of the rules: everything about an action but the moment it is
/// raised, which the function that raises it works out.
#[derive(Debug)]
pub struct Rule {
    pub code: Code,
    /// When the row is raised and counted from, in words.
    pub when: &'static str,
    pub due: Due,
    /// What does it, in words ([`Rule::done`] is the same, as code).
    pub done_by: &'static str,
    pub owner: Owner,
    pub priority: Priority,
    /// The section of the policy the row comes from.
    pub cites: &'static str,
    /// Whether contact with the patient leaves it owed ("Contact cancels").
    pub survives_contact: bool,
    pub(crate) done: Done,
}

/// How long a row's action has, counted from when it becomes active.
#[derive(Debug)]
pub enum Due {
    /// Fixed by the policy.
    Fixed(Deadline),
    /// A local default (†): the policy gives no number.
    Local(Local),
    /// One of two local defaults: `instead` when `condition` holds, else `usual`.
    Either { usual: Local, instead: Local, condition: &'static str },
}

/// A local default (†), by its name in [`Defaults`].
#[derive(Debug)]
pub struct Local {
    pub name: &'static str,
    pub(crate) get: fn(&Defaults) -> Deadline,
}

/// A local default of [`Defaults`], named once.
macro_rules! local {
    ($name:ident) => {
        $crate::pathway::table::Local { name: stringify!($name), get: |d| d.$name }
    };
}
pub(crate) use local;

impl Due {
    /// The deadline in force; `instead` says whether an [`Due::Either`]'s condition holds.
    pub(crate) fn deadline(&self, defaults: &Defaults, instead: bool) -> Deadline {
        match self {
            Self::Fixed(deadline) => *deadline,
            Self::Local(local) => (local.get)(defaults),
            Self::Either { usual, instead: other, .. } => (if instead { other } else { usual }.get)(defaults),
        }
    }
}

/// Who owns a row's action.
#[derive(Clone, Copy, Debug)]
pub enum Owner {
    Role(Role),
    /// `in_hours` when the due time falls within 09:00 to 17:00 on a working day, else
    /// `out_of_hours` (Appendix A's escalation).
    OfficeHours {
        in_hours: Role,
        out_of_hours: Role,
    },
}

/// What does an action, as code: the rule's "done by".
#[derive(Debug)]
pub(crate) enum Done {
    /// One record of this description.
    Any(Is),
    /// One record of each description; the last of them does it.
    All(&'static [Is]),
    /// A `calling_card_left` naming the visit that raised it.
    CardForTheVisit,
    /// A `filed_to_epr` listing the record that raised it.
    FilingOfTheRecord,
    /// 5.2 `inform_childrens_services`: a decision `childrens_services_known`, and a
    /// communication to a partner unless the decision's outcome is `not_applicable`.
    ChildrensServicesKnown,
}

/// One section of the table: a pathway's rows, or the rows across pathways.
#[derive(Debug)]
pub struct Section {
    pub title: &'static str,
    /// Where the section applies and what its trigger is, in words.
    pub applies: &'static str,
    pub rules: &'static [&'static Rule],
}

/// Every row, in the order the policy gives them: the engine raises only these.
pub static SECTIONS: &[Section] = &[
    Section {
        title: "Urgent and emergency referral (5.1.1)",
        applies: "`urgent_referral`, and a `routine_referral` with `risk: high`, `immediate_risk` or \
                  `referrer_child_concern`. Trigger T: the first `appointment_missed` (`initial`) of a cycle.",
        rules: super::urgent_referral::RULES,
    },
    Section {
        title: "Routine referral (5.1.2)",
        applies: "`routine_referral` with no known or suspected significant risk. Trigger T: the first \
                  `appointment_missed` (`initial`) of a cycle.",
        rules: super::routine_referral::RULES,
    },
    Section {
        title: "In receipt of services, risks identified or children (5.2)",
        applies: "`in_service` when `risk` is `high` or `children` is true. Trigger T0: the first \
                  `appointment_missed` of a cycle. Disengaged at T: the later of the first failed phone call \
                  to the patient after T0 and the first letter to the patient after T0, with no contact since T0.",
        rules: super::in_service_risk::RULES,
    },
    Section {
        title: "In receipt of services, no identified risk (5.3)",
        applies: "`in_service` when `risk` is `low` and `children` is false. Trigger T: the second consecutive \
                  `appointment_missed` (the second of a cycle).",
        rules: super::in_service_no_risk::RULES,
    },
    Section {
        title: "Home treatment, high risk (Appendix A)",
        applies: "`home_treatment`, whatever `risk` says. Trigger T: the first `home_visit` without contact, or \
                  phone call to the patient with any outcome but `contact_made`, of a cycle.",
        rules: super::home_treatment::RULES,
    },
    Section {
        title: "Child not brought (WNB)",
        applies: "`child_not_brought` (beside the other pathway's rules on a pathway conflict). Trigger: each \
                  `appointment_missed`, whatever its reason. N: the misses whose `at` is at or after this miss's \
                  `at` less `wnb_window_days` days (at the same Europe/London clock time), this one included, \
                  whatever attendances or calls came between. Every row is a local default: the guidance gives a \
                  practice example, not thresholds.",
        rules: super::child_not_brought::RULES,
    },
    Section { title: "Across pathways", applies: "Every episode, whatever its pathway.", rules: super::across::RULES },
];

/// Every row of the table.
pub fn rules() -> impl Iterator<Item = &'static Rule> {
    SECTIONS.iter().flat_map(|s| s.rules.iter().copied())
}

/// Whether the rule is one of the table's rows (the very static, not a copy).
pub(crate) fn is_listed(rule: &Rule) -> bool {
    rules().any(|r| std::ptr::eq(r, rule))
}

/// The warnings, as printed.
const WARNINGS: &[(&str, &str)] = &[
    (
        "discharge_without_mdt",
        "a `discharged` with no discharge decision (`outcome: discharge`) by a quorate MDT (attendees include \
         `senior_clinician` and `team_manager`) at or before it, unless it does `discharge_per_cpa` (5.6)",
    ),
    (
        "discharge_with_open_actions",
        "a `discharged` after which an action raised at or before it (but `file_to_epr`) is still owed \
         (`upcoming`, `open` or `overdue`); the message names their codes",
    ),
    ("discharge_without_crisis_plan", "a `discharged` with `crisis_plan_sent: false` (5.6)"),
    ("mdt_quorum", "an `mdt_meeting` without `senior_clinician` or `team_manager`: it does not count as the MDT (5.6)"),
    (
        "transfer_before_reengagement",
        "a `referral_made` to `assertive_outreach` with `transfer: true` after T0 and before the patient re-engages (5.2)",
    ),
    ("fact_conflict", "devices set a fact to different values; the rules use the safer one (with the field)"),
    ("invalid_record", "a stored record failed validation: kept, left out of the rules, and named"),
    ("clock_skew", "a record's `at` is more than 5 minutes after its `received_at`"),
];

/// How the rules read the records, before any table: the same for every row.
const GENERAL: &str = "\
Sources: the disengagement policy of a community mental health trust (document 562, v1, 2020), \
sections 5.1 to 5.7 and Appendix A (cited `5.1.1`, `A`, ...), and a safeguarding children \
partnership's \"was not brought\" guidance (cited `WNB`). The rules are a pure function of the \
episode's facts, its records and the time asked about.

- **Contact**: a `contact_attempt` to the patient (for a child, the parent or carer) with outcome \
`contact_made`, a `home_visit` with outcome `seen`, an `appointment_attended` or a `reengaged`. \
Reaching a family member is not contact.
- **Cycles**: a cycle opens at the first trigger after the last contact (or the opening) and closes \
at the next contact or at a `discharged`. A row raises its action at most once a cycle, keyed on its \
first qualifying record, except rows that say *each* or *every*; where two rows raise one code in one \
cycle, it is one action with the earlier deadline. An action's id is derived from its code and the \
record that raised it.
- **Contact cancels** the cycle's `upcoming`, `open` and `overdue` actions (an overdue one keeps \
`was_overdue`), except the rows marked as surviving contact below. A row that starts only if there \
is \"no contact by\" a time is cancelled by contact before that time, even if it survives contact. \
A cycle closed by a discharge is cancelled by the first contact after the discharge.
- **A risk learnt after contact**: a fact that turns a row on (`immediate_risk`, \
`referrer_child_concern`, `children`, `safeguarding`, `legal_status`, `known_disengager`, and \
`childrens_services_involved` for WNB) and is set after the moment the row would start raises it from \
the `fact_changed` that set it, with the row's own deadline counted from then: after the cycle's \
contact too, for the rows that survive contact.
- **A discharge** closes the cycle and cancels `offer_appointment` only: every other action still owed \
stays owed, and the warning `discharge_with_open_actions` names them.
- **Upcoming**: an action is `upcoming` only while its start is a fixed time known from the records \
(T + 24 h, a letter + 7 days, a warning letter + 21 days, the visit's deadline in 5.2). An action that \
waits for a record not yet made is absent.
- **Which rules apply** follows the current facts for the whole cycle; conflicting facts resolve to the \
safer side (`high` over `low`, `true` over `false`, any legal status over `none` with `cto` and \
`conditional_discharge` highest, `adult` and `child` together as `both`), and a pathway conflict to the \
shorter deadlines (`home_treatment` < `urgent_referral` < `in_service` < `routine_referral`), with \
`child_not_brought` evaluated beside the other.
- **Done by**: a record other than the action's own trigger, made at or after the trigger's time. \
An action done after its due time is `done` and `late`. A record entered in error counts for nothing.
- **Invalid records**: `tether pathway evaluate` refuses invalid input; a stored record that fails \
validation is kept, left out of the rules, and named by the warning `invalid_record`.
- **Not modelled**, on purpose: the explanation of information sharing at the start of an \
intervention (5.2, first paragraph), and rules for `mha_section`, `mca` and `court_order` (the policy \
gives none beyond 5.4).
";

const TIMES: &str = "\
Times: **same day** is 23:59:59 Europe/London on the local date the action starts; **N working days** \
is 17:00 Europe/London on the Nth working day after that date (Monday to Friday, less the bank \
holidays of England and Wales); **N days** keeps the local clock time across a clock change; **N \
hours** is elapsed time; **immediately** is the moment it starts. All are reported in UTC. A deadline \
marked † is a local default: a deployment overrides it with a JSON file of these names (`--defaults` \
or `TETHER_PATHWAY_DEFAULTS`).
";

/// The table, the warnings and the local defaults in force, as Markdown.
pub fn render(defaults: &Defaults) -> String {
    let local = |l: &Local| format!("{} † (`{}`)", (l.get)(defaults), l.name);
    let due = |due: &Due| match due {
        Due::Fixed(deadline) => deadline.to_string(),
        Due::Local(l) => local(l),
        Due::Either { usual, instead, condition } => format!("{}; {} {condition}", local(usual), local(instead)),
    };
    let owner = |owner: Owner| match owner {
        Owner::Role(role) => role.to_string(),
        Owner::OfficeHours { in_hours, out_of_hours } => {
            format!("{in_hours}; {out_of_hours} when due outside 09:00-17:00 on a working day")
        }
    };
    let mut out = String::from("# Tether: the disengagement pathway's rules\n\n");
    out.push_str(
        "Printed by `tether pathway rules` from the rule table the rules are evaluated from \
         (`episode/src/pathway/`), with the local defaults in force.\n\n",
    );
    out.push_str(GENERAL);
    for section in SECTIONS {
        let _ = writeln!(out, "\n## {}\n\n{}\n", section.title, section.applies);
        out.push_str("| code | when | due | done by | owner | priority | survives contact | cites |\n");
        out.push_str("|---|---|---|---|---|---|---|---|\n");
        for r in section.rules {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.code,
                r.when,
                due(&r.due),
                r.done_by,
                owner(r.owner),
                format!("{:?}", r.priority).to_lowercase(),
                if r.survives_contact { "yes" } else { "no" },
                r.cites
            );
        }
    }
    out.push_str("\n## Warnings\n\nReturned beside the actions, never dropped.\n\n| code | when |\n|---|---|\n");
    for (code, when) in WARNINGS {
        let _ = writeln!(out, "| {code} | {when} |");
    }
    out.push_str("\n## Local defaults (†)\n\n| name | value |\n|---|---|\n");
    for (name, value) in defaults.entries() {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    out.push('\n');
    out.push_str(TIMES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pathway::WarningCode;

    #[test]
    fn every_code_has_a_row_and_every_default_is_used() {
        for code in Code::ALL {
            assert!(rules().any(|r| r.code == *code), "no row for {code}");
        }
        let used: Vec<&str> = rules()
            .flat_map(|r| match &r.due {
                Due::Fixed(_) => vec![],
                Due::Local(l) => vec![l.name],
                Due::Either { usual, instead, .. } => vec![usual.name, instead.name],
            })
            .collect();
        for (name, _) in Defaults::default().entries() {
            let in_text = SECTIONS.iter().any(|s| s.applies.contains(name.as_str()))
                || rules().any(|r| r.when.contains(name.as_str()));
            assert!(used.contains(&name.as_str()) || in_text, "default {name} is in no row");
        }
    }

    #[test]
    fn every_warning_has_a_line() {
        let text = render(&Defaults::default());
        for code in WarningCode::ALL {
            let name = serde_json::to_value(code).unwrap();
            let name = name.as_str().unwrap();
            assert!(text.contains(&format!("| {name} |")), "no line for the warning {name}");
        }
    }

    #[test]
    fn the_table_shows_overridden_values() {
        let defaults = Defaults { routine_phone_patient: Deadline::WorkingDays(3), ..Defaults::default() };
        let text = render(&defaults);
        assert!(text.contains("3 working days † (`routine_phone_patient`)"), "{text}");
    }

    /// The printed table once gave `discuss_safeguarding`'s two deadlines the wrong way
    /// round ("1 working day if it includes a child").
    #[test]
    fn conditional_deadlines_read_the_right_way_round() {
        let text = render(&Defaults::default());
        let row = |code: &str, needle: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("| {code} |")) && l.contains(needle))
                .unwrap_or_else(|| panic!("no {code} row with {needle}"))
                .to_string()
        };
        let safeguarding = row("discuss_safeguarding", "if it includes a child");
        assert!(
            safeguarding.contains(
                "1 working day † (`discuss_safeguarding_adult`); same day † (`discuss_safeguarding_child`) if it includes a child"
            ),
            "{safeguarding}"
        );
        let mdt = row("arrange_mdt", "5.6, A");
        assert!(
            mdt.contains("5 working days † (`arrange_mdt`); 1 working day † (`arrange_mdt_high_risk`) if"),
            "{mdt}"
        );
    }
}
