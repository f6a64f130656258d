//! Who answers for an action: the pathway names a role (`care_coordinator`,
//! `team_manager`, …), and the dashboard shows the people that role means for this
//! episode, with the role beside them. The rule is in `docs/adr/0003-dashboard.md`:
//!
//! - `care_coordinator`, `assessor`, `responsible_clinician`: the episode's care
//!   coordinator (every value, on a conflict); when none is set, whoever opened the
//!   episode. Tether holds no responsible clinicians: the care coordinator is the one who
//!   sees that the clinician's decision is recorded.
//! - `visitor`: whoever recorded the record that raised the action (the visit); else as
//!   the care coordinator.
//! - `team_manager`, `on_call_manager`: the team's managers (active users with that role
//!   in the episode's team). Tether keeps no on-call rota: out of hours the role says to
//!   ring the trust's rota, and the team's managers answer for the action in Tether.
//! - `team_base`: the team itself, no one person.
//!
//! [`owners`] is pure: the people it can name come in a [`Directory`], read by
//! [`Directory::load`].

use std::collections::HashMap;

use episode::Episode;
use episode::pathway::{Evaluation, Role};

use crate::accounts::{self, TeamId};
use crate::store::{StoreError, Tx};

/// Why these people answer for the action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// The episode's `care_coordinator`.
    CareCoordinator,
    /// No care coordinator is set: whoever opened the episode.
    OpenedBy,
    /// Whoever recorded the record that raised the action.
    Recorded,
    /// The team's managers.
    TeamManagers,
    /// The team as a whole (the team base).
    Team,
}

/// An action's owner: the role the rules give it, and the people it means here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub role: Role,
    /// Usernames, sorted; empty when the role names nobody in Tether (a team without a
    /// manager, the team base).
    pub people: Vec<String>,
    pub basis: Basis,
}

impl Owner {
    /// Whether `person` (a username) is among the people.
    pub fn includes(&self, person: &str) -> bool {
        self.people.iter().any(|p| p == person)
    }
}

/// What the rule needs from the accounts: the team's managers, and the usernames of the
/// user ids an episode names as its care coordinator.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    pub team_managers: Vec<String>,
    /// User id -> username, for the ids the episode names.
    pub usernames: HashMap<String, String>,
}

impl Directory {
    /// Reads what `episode` needs: its team's managers, and the users its care
    /// coordinator values name (by id or by username).
    pub fn load(tx: &mut dyn Tx, episode: &Episode) -> Result<Self, StoreError> {
        let mut usernames = HashMap::new();
        for value in episode.facts.care_coordinator.values().iter().flatten() {
            if let Some(username) = accounts::username_of(tx, value)? {
                usernames.insert(value.clone(), username);
            }
        }
        Ok(Self { team_managers: accounts::team_managers(tx, &TeamId::stored(episode.team.clone()))?, usernames })
    }

    /// The person a care coordinator value names: the user's username, or the value as
    /// the episode holds it when no user has that id.
    fn person(&self, value: &str) -> String {
        self.usernames.get(value).cloned().unwrap_or_else(|| value.to_owned())
    }
}

/// The owner of every action of `evaluation`, by action id.
pub fn owners(episode: &Episode, evaluation: &Evaluation, directory: &Directory) -> HashMap<uuid::Uuid, Owner> {
    evaluation
        .actions
        .iter()
        .map(|action| (action.id, owner(action.owner, action.trigger, episode, directory)))
        .collect()
}

/// The owner of an action of `role` raised by the record `trigger`.
pub fn owner(role: Role, trigger: uuid::Uuid, episode: &Episode, directory: &Directory) -> Owner {
    let coordinator = || {
        let mut people: Vec<String> =
            episode.facts.care_coordinator.values().iter().flatten().map(|value| directory.person(value)).collect();
        people.sort();
        people.dedup();
        if people.is_empty() {
            Owner { role, people: vec![episode.opened_by.clone()], basis: Basis::OpenedBy }
        } else {
            Owner { role, people, basis: Basis::CareCoordinator }
        }
    };
    match role {
        Role::CareCoordinator | Role::Assessor | Role::ResponsibleClinician => coordinator(),
        Role::Visitor => match episode.events.iter().find(|e| *e.id.as_uuid() == trigger) {
            Some(record) => Owner { role, people: vec![record.by.clone()], basis: Basis::Recorded },
            None => coordinator(),
        },
        Role::TeamManager | Role::OnCallManager => {
            let mut people = directory.team_managers.clone();
            people.sort();
            Owner { role, people, basis: Basis::TeamManagers }
        }
        Role::TeamBase => Owner { role, people: Vec::new(), basis: Basis::Team },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use episode::Strictness;
    use serde_json::json;

    fn episode(care_coordinator: serde_json::Value) -> Episode {
        let json = json!({
            "id": "0190f5a4-0000-7000-8000-000000000001", "patient_ref": "RX-1", "team": "north",
            "opened_at": "2026-03-02T08:00:00Z", "opened_by": "ana", "pathway": "in_service",
            "care_coordinator": care_coordinator,
            "events": [{"id": "0190f5a4-0000-7000-8000-000000000002", "kind": "home_visit",
                        "at": "2026-03-02T10:00:00Z", "by": "ben", "device": "phone-ben",
                        "announced": false, "outcome": "no_answer"}],
        });
        Episode::from_value(&json, Strictness::Strict).expect("an episode")
    }

    #[test]
    fn each_role_names_its_people() {
        let directory = Directory {
            team_managers: vec!["maya".into(), "lee".into()],
            usernames: HashMap::from([("u-1".to_owned(), "bea".to_owned())]),
        };
        let visit: uuid::Uuid = "0190f5a4-0000-7000-8000-000000000002".parse().expect("a uuid");
        let episode_id: uuid::Uuid = "0190f5a4-0000-7000-8000-000000000001".parse().expect("a uuid");
        let set = episode(json!("u-1"));
        let unset = episode(json!(null));
        let who = |e: &Episode, role, trigger| {
            let o = owner(role, trigger, e, &directory);
            (o.people, o.basis)
        };
        assert_eq!(who(&set, Role::CareCoordinator, episode_id), (vec!["bea".into()], Basis::CareCoordinator));
        assert_eq!(who(&set, Role::Assessor, episode_id), (vec!["bea".into()], Basis::CareCoordinator));
        assert_eq!(who(&unset, Role::ResponsibleClinician, episode_id), (vec!["ana".into()], Basis::OpenedBy));
        assert_eq!(who(&set, Role::Visitor, visit), (vec!["ben".into()], Basis::Recorded));
        assert_eq!(who(&unset, Role::Visitor, episode_id), (vec!["ana".into()], Basis::OpenedBy));
        let managers = (vec!["lee".to_owned(), "maya".to_owned()], Basis::TeamManagers);
        assert_eq!(who(&set, Role::TeamManager, episode_id), managers);
        assert_eq!(who(&set, Role::OnCallManager, episode_id), managers);
        assert_eq!(who(&set, Role::TeamBase, episode_id), (vec![], Basis::Team));
        // A care coordinator no user has as an id is shown as the episode holds it.
        assert_eq!(who(&episode(json!("bob")), Role::CareCoordinator, episode_id).0, ["bob"]);
        // On a conflict, everyone the values name.
        let both = episode(json!(["u-1", "cal"]));
        assert_eq!(who(&both, Role::CareCoordinator, episode_id).0, ["bea", "cal"]);
    }
}
