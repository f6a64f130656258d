//! A small language for pathway scenarios: build an episode from records at times, and
//! check its evaluation at a moment against a readable rendering (expect-test).

use std::sync::OnceLock;

use episode::pathway::{Action, Calendar, Deadline, Defaults, Evaluation, State, WarningCode, evaluate, table};
use episode::{Episode, Strictness};
use expect_test::Expect;
use serde_json::{Value, json};

pub(crate) const EPISODE_ID: &str = "00000000-0000-7000-8000-000000000000";

/// The id of the nth record.
pub(crate) fn id(n: usize) -> String {
    format!("00000000-0000-7000-8000-{n:012}")
}

/// An episode being built.
pub(crate) struct Ep {
    json: Value,
    next: usize,
}

/// An episode on `pathway`, opened on Monday 2 March 2026 at 08:00 (GMT).
pub(crate) fn episode(pathway: &str) -> Ep {
    Ep {
        json: json!({
            "id": EPISODE_ID,
            "patient_ref": "RX-000-TEST",
            "team": "north",
            "opened_at": "2026-03-02T08:00:00Z",
            "opened_by": "u-opener",
            "pathway": pathway,
            "events": [],
        }),
        next: 1,
    }
}

impl Ep {
    /// Sets a fact (a JSON array for concurrent values).
    pub(crate) fn fact(mut self, field: &str, value: Value) -> Self {
        self.json[field] = value;
        self
    }

    /// Sets when the episode was opened.
    pub(crate) fn opened(mut self, at: &str) -> Self {
        self.json["opened_at"] = json!(at);
        self
    }

    /// Adds a record (`e1`, `e2`, … in order of adding) made at `at`.
    pub(crate) fn at(mut self, at: &str, body: Value) -> Self {
        let mut event = body;
        event["id"] = json!(id(self.next));
        event["at"] = json!(at);
        event["by"] = json!("u-field");
        event["device"] = json!("d-phone");
        self.json["events"].as_array_mut().expect("events").push(event);
        self.next += 1;
        self
    }

    pub(crate) fn build(&self) -> Episode {
        Episode::from_value(&self.json, Strictness::Strict).unwrap_or_else(|e| panic!("test episode is invalid: {e}"))
    }

    pub(crate) fn json(&self) -> &Value {
        &self.json
    }
}

/// Evaluates at `now` and renders the actions (without `file_to_epr`, which every record
/// raises) and the warnings.
pub(crate) fn check(ep: &Ep, now: &str, expect: Expect) {
    expect.assert_eq(&render(&eval(ep, now), false));
}

/// The same, with `file_to_epr` actions.
pub(crate) fn check_all(ep: &Ep, now: &str, expect: Expect) {
    expect.assert_eq(&render(&eval(ep, now), true));
}

/// Evaluates at `now`, and checks every action against its row of the printed rule
/// table: so every action any scenario raises is one the table prints.
pub(crate) fn eval(ep: &Ep, now: &str) -> Evaluation {
    let calendar = Calendar::england_and_wales();
    let evaluation = evaluate(&ep.build(), now.parse().expect("now"), &calendar);
    for action in &evaluation.actions {
        if let Err(why) = matches_its_printed_row(action, &calendar) {
            panic!("{why}");
        }
    }
    evaluation
}

/// One row of the rule table as `tether pathway rules` prints it.
#[derive(Debug)]
pub(crate) struct PrintedRow {
    pub(crate) code: String,
    /// Each deadline the row may give (two where it depends on a condition).
    pub(crate) due: Vec<Deadline>,
    /// Each owner the row may give.
    pub(crate) owners: Vec<String>,
    pub(crate) priority: String,
    pub(crate) cites: String,
}

/// The printed table's rows, read back from the text (with the default local values).
pub(crate) fn printed_rows() -> &'static [PrintedRow] {
    static ROWS: OnceLock<Vec<PrintedRow>> = OnceLock::new();
    ROWS.get_or_init(|| read_printed_rows(&table::render(&Defaults::default())))
}

/// Reads the rows of every section's table: `| code | when | due | done by | owner |
/// priority | survives contact | cites |`, a due as `same day`, `1 working day †
/// (\`name\`)` or two of those joined by `;`, an owner as a role or two joined by `;`.
pub(crate) fn read_printed_rows(text: &str) -> Vec<PrintedRow> {
    let codes: Vec<&str> = episode::pathway::Code::ALL.iter().map(|c| c.as_str()).collect();
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.strip_prefix('|')?.strip_suffix('|')?.split('|').map(str::trim).collect();
            let [code, _when, due, _done_by, owner, priority, _survives, cites] = cells[..] else { return None };
            if !codes.contains(&code) {
                return None;
            }
            let due = due
                .split(';')
                .map(|alternative| {
                    let text = alternative.split(['†', '(']).next().unwrap_or_default().trim();
                    text.parse::<Deadline>().unwrap_or_else(|e| panic!("{code}: the printed due {alternative:?}: {e}"))
                })
                .collect();
            let owners = owner
                .split(';')
                .map(|alternative| alternative.split_whitespace().next().unwrap_or_default().to_string())
                .collect();
            Some(PrintedRow {
                code: code.to_string(),
                due,
                owners,
                priority: priority.to_string(),
                cites: cites.to_string(),
            })
        })
        .collect()
}

/// Whether an action is one its printed row describes: the code, the owner, the
/// priority, the section cited, and the due time counted from its start.
pub(crate) fn matches_its_printed_row(action: &Action, calendar: &Calendar) -> Result<(), String> {
    let priority = format!("{:?}", action.priority).to_lowercase();
    let owner = action.owner.to_string();
    let rows: Vec<&PrintedRow> = printed_rows()
        .iter()
        .filter(|r| r.code == action.code.as_str() && r.cites == action.cites && r.priority == priority)
        .filter(|r| r.owners.contains(&owner))
        .collect();
    if rows.is_empty() {
        return Err(format!(
            "no printed row for {} (cites {}, owner {owner}, priority {priority}): {action:?}",
            action.code, action.cites
        ));
    }
    let due_as_printed =
        rows.iter().any(|r| r.due.iter().any(|d| calendar.deadline(action.active_from, *d) == action.due));
    if !due_as_printed {
        return Err(format!("{} is due at {}, which no printed row gives: {rows:?}", action.code, action.due));
    }
    Ok(())
}

/// The one action with this code; panics if there is not exactly one.
pub(crate) fn action<'a>(evaluation: &'a Evaluation, code: &str) -> &'a episode::pathway::Action {
    let found: Vec<_> = evaluation.actions.iter().filter(|a| a.code.as_str() == code).collect();
    assert_eq!(found.len(), 1, "expected one {code}, got {found:#?}");
    found[0]
}

fn name(uuid: &uuid::Uuid) -> String {
    let text = uuid.to_string();
    if text == EPISODE_ID {
        return "opening".into();
    }
    match text.strip_prefix("00000000-0000-7000-8000-") {
        Some(n) => format!("e{}", n.trim_start_matches('0')),
        None => text,
    }
}

fn render(evaluation: &Evaluation, with_filing: bool) -> String {
    let mut out = String::new();
    for a in &evaluation.actions {
        if !with_filing && a.code.as_str() == "file_to_epr" {
            continue;
        }
        let state = format!("{:?}", a.state).to_lowercase();
        out.push_str(&format!("{:<33} {:<9} {} -> {}  {}", a.code.as_str(), state, a.active_from, a.due, a.owner));
        out.push_str(&format!("  [{}; {:?}; from {}]", a.cites, a.priority, name(&a.trigger)).to_lowercase());
        if let Some(by) = &a.resolved_by {
            out.push_str(&format!(" by {}", name(by.as_uuid())));
        }
        if a.late {
            out.push_str(" late");
        }
        if a.was_overdue && a.state != State::Overdue {
            out.push_str(" was_overdue");
        }
        out.push('\n');
    }
    for w in &evaluation.warnings {
        let subject = match (&w.field, &w.record) {
            (Some(field), _) => format!(" {}", field.as_str()),
            (None, Some(record)) => format!(" {}", record.parse().map(|u| name(&u)).unwrap_or_else(|_| record.clone())),
            (None, None) => String::new(),
        };
        // The codes a discharge leaves owed, as its warning names them.
        let codes = match w.code {
            WarningCode::DischargeWithOpenActions => {
                format!(": {}", w.message.rsplit(": ").next().unwrap_or_default())
            }
            _ => String::new(),
        };
        out.push_str(&format!("! {:?}{subject}{codes}\n", w.code));
    }
    out
}

// Records, as the episode's record kinds name them.

pub(crate) fn missed_initial() -> Value {
    json!({"kind": "appointment_missed", "appointment": "initial"})
}

pub(crate) fn missed_follow_up() -> Value {
    json!({"kind": "appointment_missed", "appointment": "follow_up"})
}

pub(crate) fn not_brought() -> Value {
    json!({"kind": "appointment_missed", "appointment": "follow_up", "reason": "not_brought"})
}

pub(crate) fn attended() -> Value {
    json!({"kind": "appointment_attended"})
}

pub(crate) fn booked(at: &str) -> Value {
    json!({"kind": "appointment_booked", "for": at})
}

pub(crate) fn attempt(method: &str, target: &str, outcome: &str) -> Value {
    json!({"kind": "contact_attempt", "method": method, "target": target, "outcome": outcome})
}

pub(crate) fn phone(target: &str, outcome: &str) -> Value {
    attempt("phone", target, outcome)
}

pub(crate) fn letter(method: &str, target: &str, letter: &str) -> Value {
    json!({"kind": "contact_attempt", "method": method, "target": target, "outcome": "sent", "letter": letter})
}

/// A phone call that reached the patient, with what it found.
pub(crate) fn reached(deterioration: &str, wishes_discharge: bool) -> Value {
    json!({"kind": "contact_attempt", "method": "phone", "target": "patient", "outcome": "contact_made",
           "deterioration": deterioration, "wishes_discharge": wishes_discharge})
}

pub(crate) fn visit(announced: bool, outcome: &str) -> Value {
    json!({"kind": "home_visit", "announced": announced, "outcome": outcome})
}

pub(crate) fn card(visit: usize) -> Value {
    json!({"kind": "calling_card_left", "visit": id(visit)})
}

pub(crate) fn told(party: &str, channel: &str) -> Value {
    json!({"kind": "communication", "party": party, "channel": channel})
}

pub(crate) fn decided(topic: &str, outcome: &str) -> Value {
    json!({"kind": "decision", "topic": topic, "outcome": outcome, "rationale": "discussed with the team"})
}

pub(crate) fn referral(to: &str, transfer: bool) -> Value {
    json!({"kind": "referral_made", "to": to, "transfer": transfer})
}

pub(crate) fn mdt(attendees: &[&str], outcome: &str) -> Value {
    json!({"kind": "mdt_meeting", "attendees": attendees, "outcome": outcome})
}

pub(crate) fn reengaged() -> Value {
    json!({"kind": "reengaged"})
}

pub(crate) fn assessed() -> Value {
    json!({"kind": "assessment_completed"})
}

pub(crate) fn discharged(crisis_plan_sent: bool) -> Value {
    json!({"kind": "discharged", "crisis_plan_sent": crisis_plan_sent})
}

pub(crate) fn fact_changed(field: &str, value: Value) -> Value {
    json!({"kind": "fact_changed", "field": field, "value": value})
}

pub(crate) fn filed(records: &[usize]) -> Value {
    json!({"kind": "filed_to_epr", "records": records.iter().map(|n| id(*n)).collect::<Vec<_>>(), "epr_ref": "EPR-1"})
}

pub(crate) fn entered_in_error(record: usize) -> Value {
    json!({"kind": "entered_in_error", "record": id(record), "reason": "wrong patient"})
}
