//! The claims mapping: which of a person's roles at the trust make them what in Tether.
//! A TOML file of rules, each a condition on the claims a provider sends and the Tether
//! role and teams it gives:
//!
//! ```toml
//! [[rule]]
//! provider = "cis2"        # optional: any provider
//! cis2_role = "R8000"      # an NHS CIS2 national RBAC role (`nhsid_nrbac_roles`)…
//! org_code = "RX4"         # …held at this organisation (ODS code)
//! teams = ["north"]
//! role = "practitioner"
//!
//! [[rule]]
//! app_role = "Tether.Manager"   # an Entra ID app role (`roles`)
//! teams = ["north"]
//! role = "team_manager"
//!
//! [[rule]]
//! group = "2f7c9d1e-…"          # an Entra ID group (`groups`)
//! teams = ["south"]
//! role = "practitioner"
//! ```
//!
//! A person gets the role of the first rule that matches them, and the teams of every
//! matching rule that gives that same role: a manager of one team who is a practitioner
//! in another becomes that team's manager only, never the other's (Tether has one role a
//! person). Rules are read top to bottom, so the stronger ones go first. A person no rule
//! matches is refused.
//!
//! NHS CIS2 sends each role as `{"role_code": "S8000:G8000:R8001", "org_code": "RX4",
//! "person_roleid": "…"}`; `cis2_role` matches any part of the code (the job role
//! `R8001`, its group, its subgroup) or the whole. When the person picked one role at
//! sign-in (`selected_roleid`), only that one counts.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::ProviderId;
use crate::accounts::{Role, TeamId};

/// One rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    provider: Option<ProviderId>,
    cis2_role: Option<String>,
    org_code: Option<String>,
    app_role: Option<String>,
    group: Option<String>,
    teams: Vec<TeamId>,
    role: Role,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    #[serde(default)]
    rule: Vec<RuleFile>,
}

/// What a rule looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// A CIS2 RBAC role (either part may be left out, not both).
    Cis2 {
        role: Option<String>,
        org: Option<String>,
    },
    AppRole(String),
    Group(String),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub provider: Option<ProviderId>,
    pub when: Condition,
    pub teams: Vec<TeamId>,
    pub role: Role,
}

/// The rules, in order.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    pub rules: Vec<Rule>,
}

/// One CIS2 RBAC role a person holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cis2Role {
    pub role_code: String,
    pub org_code: String,
}

/// The claims the mapping reads, gathered from the ID token (and userinfo).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub cis2: Vec<Cis2Role>,
    pub app_roles: Vec<String>,
    pub groups: Vec<String>,
    /// Entra ID sent a reference to its graph instead of the groups (too many to fit).
    pub groups_overage: bool,
}

/// Where the mapping places a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub role: Role,
    pub teams: Vec<TeamId>,
}

/// Why the mapping placed no one: what it saw, to show the person and their
/// administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotPlaced(pub Seen);

impl fmt::Display for NotPlaced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seen = &self.0;
        f.write_str("no rule of Tether's claims mapping matches this person")?;
        let mut parts = Vec::new();
        if !seen.cis2.is_empty() {
            let roles: Vec<String> = seen.cis2.iter().map(|r| format!("{} at {}", r.role_code, r.org_code)).collect();
            parts.push(format!("NHS CIS2 roles {}", roles.join(", ")));
        }
        if !seen.app_roles.is_empty() {
            parts.push(format!("app roles {}", seen.app_roles.join(", ")));
        }
        if !seen.groups.is_empty() {
            parts.push(format!("groups {}", seen.groups.join(", ")));
        }
        if parts.is_empty() {
            f.write_str("; the provider sent no roles or groups")?;
        } else {
            write!(f, "; the provider sent {}", parts.join("; "))?;
        }
        if seen.groups_overage {
            f.write_str("; Entra ID sent a link to the groups instead of the groups (too many): assign app roles or filter the groups sent to the application")?;
        }
        Ok(())
    }
}

/// The longest claim value kept for matching and display: anything longer is not a role
/// code, an app role or a group id.
const MAX_VALUE_CHARS: usize = 256;
/// The most roles, app roles or groups read from one sign-in.
const MAX_VALUES: usize = 200;

impl Mapping {
    /// Parses and checks the mapping.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: MappingFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut rules = Vec::with_capacity(file.rule.len());
        for (i, rule) in file.rule.into_iter().enumerate() {
            let n = i + 1;
            let when = match (rule.cis2_role, rule.org_code, rule.app_role, rule.group) {
                (role @ Some(_), org, None, None) | (role @ None, org @ Some(_), None, None) => {
                    Condition::Cis2 { role, org }
                }
                (None, None, Some(app_role), None) => Condition::AppRole(app_role),
                (None, None, None, Some(group)) => Condition::Group(group),
                (None, None, None, None) => {
                    anyhow::bail!(
                        "rule {n} matches nothing: give `cis2_role` and/or `org_code`, `app_role`, or `group`"
                    )
                }
                _ => anyhow::bail!("rule {n} mixes conditions: one rule looks at CIS2 roles, an app role, or a group"),
            };
            anyhow::ensure!(!rule.teams.is_empty(), "rule {n} gives no team");
            rules.push(Rule { provider: rule.provider, when, teams: rule.teams, role: rule.role });
        }
        Ok(Self { rules })
    }

    /// The providers the rules name.
    pub fn providers(&self) -> BTreeSet<&ProviderId> {
        self.rules.iter().filter_map(|r| r.provider.as_ref()).collect()
    }

    /// Where `seen`, from `provider`, places the person.
    pub fn place(&self, provider: &ProviderId, seen: &Seen) -> Result<Placement, NotPlaced> {
        let matching: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|rule| rule.provider.as_ref().is_none_or(|p| p == provider))
            .filter(|rule| matches(&rule.when, seen))
            .collect();
        let Some(first) = matching.first() else { return Err(NotPlaced(seen.clone())) };
        let mut teams: Vec<TeamId> = Vec::new();
        for rule in matching.iter().filter(|rule| rule.role == first.role) {
            for team in &rule.teams {
                if !teams.contains(team) {
                    teams.push(team.clone());
                }
            }
        }
        Ok(Placement { role: first.role, teams })
    }
}

fn matches(when: &Condition, seen: &Seen) -> bool {
    match when {
        Condition::Cis2 { role, org } => seen.cis2.iter().any(|held| {
            role.as_ref()
                .is_none_or(|role| held.role_code == *role || held.role_code.split(':').any(|part| part == role))
                && org.as_ref().is_none_or(|org| held.org_code.eq_ignore_ascii_case(org))
        }),
        Condition::AppRole(role) => seen.app_roles.iter().any(|held| held == role),
        Condition::Group(group) => seen.groups.iter().any(|held| held.eq_ignore_ascii_case(group)),
    }
}

fn short(value: &Value) -> Option<String> {
    value.as_str().filter(|s| !s.is_empty() && s.chars().count() <= MAX_VALUE_CHARS).map(str::to_owned)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(short).take(MAX_VALUES).collect(),
        // Some providers send a single value as a string.
        Some(one @ Value::String(_)) => short(one).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// Gathers what the mapping reads from a sign-in's claims. Values of unexpected shape
/// are left out, never an error: a provider that sends something odd places no one
/// rather than crashing the sign-in.
pub fn seen(claims: &Map<String, Value>) -> Seen {
    let selected = claims.get("selected_roleid").and_then(short);
    let cis2 = match claims.get("nhsid_nrbac_roles") {
        Some(Value::Array(roles)) => roles
            .iter()
            .filter(|role| {
                selected.as_ref().is_none_or(|s| role.get("person_roleid").and_then(short).as_ref() == Some(s))
            })
            .filter_map(|role| {
                Some(Cis2Role {
                    role_code: role.get("role_code").and_then(short)?,
                    org_code: role.get("org_code").and_then(short)?,
                })
            })
            .take(MAX_VALUES)
            .collect(),
        _ => Vec::new(),
    };
    let groups_overage =
        claims.get("_claim_names").and_then(Value::as_object).is_some_and(|names| names.contains_key("groups"));
    Seen { cis2, app_roles: strings(claims.get("roles")), groups: strings(claims.get("groups")), groups_overage }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const RULES: &str = r#"
[[rule]]
provider = "cis2"
cis2_role = "R8000"
org_code = "RX4"
teams = ["north"]
role = "team_manager"

[[rule]]
provider = "cis2"
cis2_role = "R8001"
org_code = "RX4"
teams = ["north", "south"]
role = "practitioner"

[[rule]]
app_role = "Tether.Practitioner"
teams = ["south"]
role = "practitioner"

[[rule]]
group = "6F2C0000-0000-0000-0000-000000000001"
teams = ["east"]
role = "practitioner"
"#;

    fn cis2() -> ProviderId {
        "cis2".parse().expect("an id")
    }

    fn place(claims: Value) -> Result<Placement, NotPlaced> {
        let mapping = Mapping::parse(RULES).expect("valid rules");
        mapping.place(&cis2(), &seen(claims.as_object().expect("an object")))
    }

    fn teams(names: &[&str]) -> Vec<TeamId> {
        names.iter().map(|n| n.parse().expect("a team")).collect()
    }

    #[test]
    fn a_cis2_role_at_the_trust_places_its_holder() {
        let claims = json!({"nhsid_nrbac_roles": [
            {"role_code": "S8000:G8000:R8001", "org_code": "RX4", "person_roleid": "1"},
            {"role_code": "S8000:G8000:R8000", "org_code": "RX9", "person_roleid": "2"},
        ]});
        // R8000 is held at another organisation: only the practitioner rule matches.
        assert_eq!(place(claims), Ok(Placement { role: Role::Practitioner, teams: teams(&["north", "south"]) }));
    }

    #[test]
    fn the_first_rule_decides_the_role_and_only_its_role_adds_teams() {
        let claims = json!({
            "nhsid_nrbac_roles": [
                {"role_code": "S8000:G8000:R8000", "org_code": "rx4", "person_roleid": "1"},
                {"role_code": "S8000:G8000:R8001", "org_code": "RX4", "person_roleid": "2"},
            ],
            "roles": ["Tether.Practitioner"],
        });
        assert_eq!(place(claims), Ok(Placement { role: Role::TeamManager, teams: teams(&["north"]) }));
    }

    #[test]
    fn a_selected_role_is_the_only_one_that_counts() {
        let claims = json!({
            "selected_roleid": "2",
            "nhsid_nrbac_roles": [
                {"role_code": "S8000:G8000:R8000", "org_code": "RX4", "person_roleid": "1"},
                {"role_code": "S8000:G8000:R8001", "org_code": "RX4", "person_roleid": "2"},
            ],
        });
        assert_eq!(place(claims).map(|p| p.role), Ok(Role::Practitioner));
    }

    #[test]
    fn entra_app_roles_and_groups_place_people_and_others_are_refused_saying_what_was_seen() {
        assert_eq!(place(json!({"roles": ["Tether.Practitioner"]})).map(|p| p.teams), Ok(teams(&["south"])));
        assert_eq!(
            place(json!({"groups": ["6f2c0000-0000-0000-0000-000000000001"]})).map(|p| p.teams),
            Ok(teams(&["east"]))
        );
        let refused =
            place(json!({"roles": ["Other"], "groups": "g-1", "nhsid_nrbac_roles": "odd"})).expect_err("not placed");
        assert_eq!(
            refused.to_string(),
            "no rule of Tether's claims mapping matches this person; the provider sent app roles Other; groups g-1"
        );
        let empty = place(json!({"_claim_names": {"groups": "src1"}})).expect_err("not placed");
        assert!(empty.to_string().contains("sent no roles or groups") && empty.to_string().contains("too many"));
    }

    #[test]
    fn rules_that_match_nothing_or_too_much_are_refused() {
        let cases = [
            ("[[rule]]\nteams = [\"north\"]\nrole = \"admin\"\n", "matches nothing"),
            ("[[rule]]\napp_role = \"a\"\ngroup = \"g\"\nteams = [\"north\"]\nrole = \"admin\"\n", "mixes conditions"),
            ("[[rule]]\napp_role = \"a\"\nteams = []\nrole = \"admin\"\n", "gives no team"),
            ("[[rule]]\napp_role = \"a\"\nteams = [\"north\"]\nrole = \"boss\"\n", "unknown variant"),
        ];
        for (text, expected) in cases {
            let error = Mapping::parse(text).expect_err(expected).to_string();
            assert!(error.contains(expected), "{expected:?} in {error:?}");
        }
    }
}
