//! `tether serve --demo`: two teams, users of every role, and episodes on every pathway —
//! some overdue, one with a conflict, one with a likely duplicate, most not yet filed, some
//! with a care coordinator — so that a newcomer sees a working dashboard at once.
//!
//! The episodes are made as devices make them: each practitioner's phone is its own
//! Automerge actor, and each record has the receipt a sync would have given it. Patient
//! references are obviously made up (`DEMO-…`).

use automerge::ActorId;
use episode::document::{EpisodeDoc, Opening};
use episode::{EpisodeId, Event, EventId, FactField, FactValue, Pathway, PatientRef, Risk};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::accounts::{self, DeviceId, Password, Role, TeamId, Username};
use crate::auth::password;
use crate::store::{Conn, Tx};
use crate::{caseload, episodes};

/// A demo account, with the password it was given.
#[derive(Debug)]
pub struct Account {
    pub username: &'static str,
    pub role: Role,
    pub teams: &'static [&'static str],
    pub password: String,
}

const TEAMS: [(&str, &str); 2] =
    [("north", "North Community Mental Health Team"), ("south", "South Children and Families Team")];

const USERS: [(&str, Role, &[&str]); 7] = [
    ("ana", Role::Practitioner, &["north"]),
    ("ben", Role::Practitioner, &["north"]),
    ("maya", Role::TeamManager, &["north"]),
    ("sam", Role::SafeguardingLead, &["north", "south"]),
    ("ada", Role::Admin, &["north", "south"]),
    ("priya", Role::Practitioner, &["south"]),
    ("tom", Role::TeamManager, &["south"]),
];

/// The meta key that marks a database the demo seeded.
const SEEDED: &str = "demo_seeded";

/// What `seed` did.
#[derive(Debug)]
pub enum Seeded {
    /// Seeded now: the accounts and the passwords they were given (shown only now).
    Now(Vec<Account>),
    /// The demo seeded this database before; nothing was changed, and its accounts keep
    /// their passwords (`tether user reset-password` gives one a new one).
    Before,
    /// The database has teams of its own; nothing was seeded.
    NotTheDemo,
}

impl Seeded {
    /// The accounts seeded now, if any.
    pub fn new_accounts(self) -> Option<Vec<Account>> {
        match self {
            Self::Now(accounts) => Some(accounts),
            Self::Before | Self::NotTheDemo => None,
        }
    }
}

/// Seeds the demo if the database has no teams. A database the demo seeded before is
/// left as it is: running `--demo` again never takes anyone's password away.
pub fn seed(conn: &mut dyn Conn, now: Timestamp) -> anyhow::Result<Seeded> {
    let mut tx = conn.transaction()?;
    if tx.meta(SEEDED)?.is_some() {
        return Ok(Seeded::Before);
    }
    let teams = tx.count_teams()?;
    if teams > 0 {
        return Ok(Seeded::NotTheDemo);
    }
    let mut accounts = Vec::new();
    for (id, name) in TEAMS {
        accounts::add_team(&mut *tx, &id.parse().map_err(anyhow::Error::msg)?, name, now)?;
    }
    for (username, role, teams) in USERS {
        let password = new_password()?;
        let hash = password::hash(&Password::new(password.clone()).map_err(anyhow::Error::msg)?)
            .map_err(|e| anyhow::anyhow!("cannot hash a password: {e}"))?;
        let name: Username = username.parse().map_err(anyhow::Error::msg)?;
        let team_ids =
            teams.iter().map(|t| t.parse()).collect::<Result<Vec<TeamId>, _>>().map_err(anyhow::Error::msg)?;
        accounts::add_user(&mut *tx, &name, &hash, role, &team_ids, now)?;
        accounts.push(Account { username, role, teams, password });
    }
    episodes_for_demo(&mut *tx, now)?;
    tx.set_meta(SEEDED, &now.to_string())?;
    tx.commit()?;
    Ok(Seeded::Now(accounts))
}

/// Sixteen random letters and digits (without the ones that look alike).
fn new_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bytes = crate::auth::token::random_bytes::<16>().map_err(|_| anyhow::anyhow!("no random numbers"))?;
    Ok(bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect())
}

/// One demo episode being written, by one device at a time.
struct Draft {
    doc: EpisodeDoc,
    id: EpisodeId,
    team: &'static str,
    now: Timestamp,
    receipts: Vec<(String, i64, DeviceId)>,
}

fn actor(device: &str) -> ActorId {
    // A stable actor per demo device, so that each phone's changes read as its own.
    let digest = <sha2::Sha256 as sha2::Digest>::digest(device.as_bytes());
    ActorId::from(&digest[..16])
}

fn ago(now: Timestamp, hours: f64) -> Timestamp {
    now - SignedDuration::from_secs_f64(hours * 3600.0)
}

impl Draft {
    fn open(
        now: Timestamp,
        team: &'static str,
        patient: &str,
        pathway: Pathway,
        hours_ago: f64,
        by: &str,
        facts: Vec<(FactField, FactValue)>,
    ) -> anyhow::Result<Self> {
        let id = EpisodeId::from_uuid(uuid::Uuid::now_v7());
        let opening = Opening {
            id,
            patient_ref: PatientRef::new(patient).ok_or_else(|| anyhow::anyhow!("empty patient reference"))?,
            team: team.into(),
            opened_at: ago(now, hours_ago),
            opened_by: by.into(),
            pathway,
            facts,
            plan: String::new(),
        };
        let doc = EpisodeDoc::open(&opening, actor(&format!("phone-{by}")))?;
        Ok(Self { doc, id, team, now, receipts: Vec::new() })
    }

    /// Records `kind` with `fields`, `hours_ago`, by `by` on their phone; the server
    /// received it at the phone's next sync, up to an hour later.
    fn record(&mut self, kind: &str, hours_ago: f64, by: &str, fields: Value) -> anyhow::Result<EventId> {
        let device = format!("phone-{by}");
        self.doc.automerge().set_actor(actor(&device));
        let at = ago(self.now, hours_ago);
        let Value::Object(fields) = fields else { anyhow::bail!("demo record fields must be an object") };
        let event = Event::new_record(uuid::Uuid::now_v7().into(), kind, at, by, &device, fields)?;
        if kind == "fact_changed" {
            self.doc.set_fact(&event)?;
        } else {
            self.doc.record(&event)?;
        }
        let received = (at + SignedDuration::from_mins(((hours_ago * 7.0) as i64 % 50) + 3)).min(self.now);
        self.receipts.push((event.id.to_string(), received.as_millisecond(), DeviceId::server_made(device)));
        Ok(event.id)
    }

    fn store(mut self, tx: &mut dyn Tx) -> anyhow::Result<()> {
        episodes::insert(
            tx,
            self.id,
            &self.team.parse().map_err(anyhow::Error::msg)?,
            &mut self.doc,
            self.now.as_second(),
        )?;
        // Noted without a `seq` (0), as before there was one: they reach a device with the
        // whole document, or in a sync from cursor 0.
        for (event, at, device) in &self.receipts {
            tx.record_receipts(self.id, std::slice::from_ref(event), device, *at, 0)?;
        }
        let actor = episodes::server_actor(tx)?;
        if let Some(mut stored) = episodes::load(tx, self.id, &actor)? {
            caseload::summarize(tx, &mut stored, self.now, &crate::alerts::Alerts::default())
                .map_err(|e| anyhow::anyhow!("cannot summarise: {e:?}"))?;
        }
        Ok(())
    }
}

fn fact(field: FactField, value: Value) -> anyhow::Result<(FactField, FactValue)> {
    Ok((field, FactValue::from_json(field, &value).map_err(anyhow::Error::msg)?))
}

fn attended_history(draft: &mut Draft, by: &str, weeks: &[f64]) -> anyhow::Result<()> {
    for week in weeks {
        draft.record("appointment_attended", week * 7.0 * 24.0, by, json!({}))?;
    }
    Ok(())
}

fn episodes_for_demo(tx: &mut dyn Tx, now: Timestamp) -> anyhow::Result<()> {
    // North: a routine referral whose first appointment was missed three days ago.
    let mut e = Draft::open(now, "north", "DEMO-1001", Pathway::RoutineReferral, 24.0 * 9.0, "maya", vec![])?;
    e.record("appointment_missed", 72.0, "ana", json!({"appointment": "initial"}))?;
    e.store(&mut *tx)?;

    // North: an urgent referral, an unannounced visit with no answer yesterday and a card.
    let mut e = Draft::open(
        now,
        "north",
        "DEMO-1002",
        Pathway::UrgentReferral,
        50.0,
        "maya",
        vec![fact(FactField::Risk, json!("high"))?],
    )?;
    e.record("appointment_missed", 30.0, "ben", json!({"appointment": "initial"}))?;
    let visit = e.record(
        "home_visit",
        27.0,
        "ben",
        json!({"announced": false, "outcome": "no_answer",
        "location": {"lat": 53.4808, "lon": -2.2426, "accuracy": 25.0}}),
    )?;
    e.record("calling_card_left", 26.8, "ben", json!({"visit": visit}))?;
    e.store(&mut *tx)?;

    // North: in service, where two phones set the risk differently while offline: a
    // conflict for the team base to resolve.
    let mut e = Draft::open(
        now,
        "north",
        "DEMO-1003",
        Pathway::InService,
        24.0 * 60.0,
        "maya",
        vec![fact(FactField::CareCoordinator, json!("ana"))?],
    )?;
    attended_history(&mut e, "ana", &[8.0, 6.0, 4.0])?;
    e.record("appointment_missed", 24.0 * 4.0, "ana", json!({"appointment": "follow_up"}))?;
    e.record(
        "contact_attempt",
        24.0 * 3.0,
        "ana",
        json!({"method": "phone", "target": "patient", "outcome": "no_answer"}),
    )?;
    let mut other = EpisodeDoc::load(&e.doc.save(), actor("phone-ben"))?;
    e.record("fact_changed", 20.0, "ana", json!({"field": "risk", "value": "high"}))?;
    let at = ago(now, 19.5);
    let Value::Object(fields) = json!({"field": "risk", "value": "low"}) else { anyhow::bail!("not an object") };
    let change = Event::new_record(uuid::Uuid::now_v7().into(), "fact_changed", at, "ben", "phone-ben", fields)?;
    other.set_fact(&change)?;
    e.receipts.push((
        change.id.to_string(),
        (at + SignedDuration::from_mins(40)).as_millisecond(),
        DeviceId::server_made("phone-ben".into()),
    ));
    e.doc.merge(&mut other)?;
    e.store(&mut *tx)?;

    // North: home treatment, high risk; a visit with no answer six hours ago, nobody told
    // the team manager: the four-hour escalation is overdue.
    let mut e = Draft::open(
        now,
        "north",
        "DEMO-1004",
        Pathway::HomeTreatment,
        24.0 * 5.0,
        "maya",
        vec![fact(FactField::Risk, json!("high"))?, fact(FactField::CareCoordinator, json!("ana"))?],
    )?;
    attended_history(&mut e, "ana", &[0.5])?;
    let visit = e.record("home_visit", 6.0, "ana", json!({"announced": false, "outcome": "no_answer"}))?;
    e.record("calling_card_left", 5.9, "ana", json!({"visit": visit}))?;
    e.store(&mut *tx)?;

    // North: a known disengager, seen recently; the team base has filed the visit.
    let mut e = Draft::open(
        now,
        "north",
        "DEMO-1005",
        Pathway::InService,
        24.0 * 90.0,
        "maya",
        vec![fact(FactField::KnownDisengager, json!(true))?],
    )?;
    attended_history(&mut e, "ben", &[11.0, 9.0, 7.0, 5.0, 3.0])?;
    let seen = e.record("appointment_attended", 24.0 * 2.0, "ben", json!({}))?;
    e.record(
        "decision",
        24.0 * 2.0 - 1.0,
        "ben",
        json!({"topic": "disengagement_plan", "outcome": "yes",
        "rationale": "Agreed with the patient: text before each visit, sister as named contact."}),
    )?;
    e.record("filed_to_epr", 24.0, "ada", json!({"records": [seen], "epr_ref": "EPR-DEMO-55"}))?;
    e.store(&mut *tx)?;

    // North: the same phone call recorded from two phones four minutes apart: a likely
    // duplicate.
    let mut e = Draft::open(now, "north", "DEMO-1006", Pathway::RoutineReferral, 24.0 * 4.0, "maya", vec![])?;
    e.record("appointment_missed", 30.0, "ana", json!({"appointment": "initial", "reason": "did_not_attend"}))?;
    e.record("contact_attempt", 28.0, "ana", json!({"method": "phone", "target": "patient", "outcome": "no_answer"}))?;
    e.record("contact_attempt", 27.94, "ben", json!({"method": "phone", "target": "patient", "outcome": "no_answer"}))?;
    e.store(&mut *tx)?;

    // South: a child not brought twice: Children's Services must be told.
    let mut e = Draft::open(
        now,
        "south",
        "DEMO-2001",
        Pathway::ChildNotBrought,
        24.0 * 80.0,
        "tom",
        vec![fact(FactField::Children, json!(true))?, fact(FactField::CareCoordinator, json!("priya"))?],
    )?;
    attended_history(&mut e, "priya", &[11.0, 10.0, 8.0, 7.0])?;
    e.record("appointment_missed", 24.0 * 20.0, "priya", json!({"appointment": "follow_up", "reason": "not_brought"}))?;
    e.record("appointment_missed", 24.0 * 5.0, "priya", json!({"appointment": "follow_up", "reason": "not_brought"}))?;
    e.store(&mut *tx)?;

    // South: a first miss two days ago.
    let mut e = Draft::open(
        now,
        "south",
        "DEMO-2002",
        Pathway::ChildNotBrought,
        24.0 * 40.0,
        "tom",
        vec![fact(FactField::Children, json!(true))?, fact(FactField::Risk, json!(Risk::High))?],
    )?;
    attended_history(&mut e, "priya", &[5.0, 3.0])?;
    e.record("appointment_missed", 48.0, "priya", json!({"appointment": "follow_up", "reason": "not_brought"}))?;
    e.store(&mut *tx)?;

    // South: a family that comes to every appointment.
    let mut e = Draft::open(
        now,
        "south",
        "DEMO-2003",
        Pathway::InService,
        24.0 * 85.0,
        "tom",
        vec![fact(FactField::Children, json!(true))?],
    )?;
    attended_history(&mut e, "priya", &[12.0, 10.0, 8.0, 6.0, 4.0, 2.0, 1.0])?;
    e.store(&mut *tx)?;
    Ok(())
}
