//! The local defaults: every deadline the policy leaves open (marked † in the rule
//! table), in one value a deployment can override and `tether pathway rules` prints for
//! the clinical safety officer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How long an action has, counted from the moment it becomes active.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Deadline {
    /// Due at the moment it is raised.
    Immediately,
    /// 23:59:59 Europe/London on the local date it is raised.
    SameDay,
    /// Elapsed real time.
    Hours(u32),
    /// Calendar days, keeping the local clock time.
    Days(u32),
    /// 17:00 Europe/London on the Nth working day after the local date it is raised.
    WorkingDays(u32),
}

impl fmt::Display for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: u32| if n == 1 { "" } else { "s" };
        match *self {
            Self::Immediately => f.write_str("immediately"),
            Self::SameDay => f.write_str("same day"),
            Self::Hours(n) => write!(f, "{n} hour{}", plural(n)),
            Self::Days(n) => write!(f, "{n} day{}", plural(n)),
            Self::WorkingDays(n) => write!(f, "{n} working day{}", plural(n)),
        }
    }
}

impl FromStr for Deadline {
    type Err = String;

    /// Reads what `Display` writes: `immediately`, `same day`, `4 hours`, `7 days`,
    /// `2 working days`.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        match text {
            "immediately" => return Ok(Self::Immediately),
            "same day" => return Ok(Self::SameDay),
            _ => {}
        }
        let bad = || {
            format!(
                "`{text}` is not a deadline: write `immediately`, `same day`, `N hours`, `N days` or `N working days`"
            )
        };
        let (number, unit) = text.split_once(' ').ok_or_else(bad)?;
        let n: u32 = number.parse().map_err(|_| bad())?;
        if n == 0 || n > 366 {
            return Err(format!("`{text}`: the number must be from 1 to 366"));
        }
        match unit.trim() {
            "hour" | "hours" => Ok(Self::Hours(n)),
            "day" | "days" => Ok(Self::Days(n)),
            "working day" | "working days" => Ok(Self::WorkingDays(n)),
            _ => Err(bad()),
        }
    }
}

impl Serialize for Deadline {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Deadline {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Every local default, named after the section and the action it sets.
///
/// A deployment overrides any of them with a JSON object of the same names (missing
/// names keep the values below); `tether pathway rules` prints the values in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Defaults {
    // 5.1.1, urgent and emergency referral.
    pub urgent_contact_family_carers: Deadline,
    pub urgent_consider_cold_call: Deadline,
    pub urgent_notifications_after_24_hours: Deadline,
    pub urgent_safeguarding_children_discussion: Deadline,
    pub urgent_notify_referrer_of_child_concern: Deadline,
    // 5.1.2, routine referral.
    pub routine_phone_patient: Deadline,
    pub routine_write_to_patient: Deadline,
    pub routine_notifications_after_letter: Deadline,
    // 5.2, in receipt of services with risks or children.
    pub risk_phone_patient: Deadline,
    pub risk_write_to_patient: Deadline,
    pub risk_contact_electronically: Deadline,
    pub risk_contact_family_carers: Deadline,
    pub risk_contact_other_providers: Deadline,
    pub risk_unannounced_home_visit: Deadline,
    pub risk_considerations_with_escalation: Deadline,
    pub risk_assess_parenting_impact: Deadline,
    pub risk_notify_referrer: Deadline,
    pub risk_inform_childrens_services: Deadline,
    // 5.3, in receipt of services with no identified risk.
    pub no_risk_contact_patient: Deadline,
    pub no_risk_contact_family_carers: Deadline,
    pub no_risk_step_up: Deadline,
    pub no_risk_discharge_per_cpa: Deadline,
    pub no_risk_send_discharge_warning_letter: Deadline,
    // WNB, child not brought: every row is local.
    pub wnb_window_days: u32,
    pub wnb_inform_at_misses: u32,
    pub wnb_refer_at_misses: u32,
    pub wnb_consider_impact_on_child: Deadline,
    pub wnb_send_was_not_brought_letter: Deadline,
    pub wnb_inform_childrens_services: Deadline,
    pub wnb_refer_to_childrens_services: Deadline,
    // Across pathways.
    pub leave_calling_card: Deadline,
    pub offer_appointment: Deadline,
    pub arrange_mdt: Deadline,
    pub arrange_mdt_high_risk: Deadline,
    pub share_mdt_plan: Deadline,
    pub discharge_after_mdt: Deadline,
    pub consider_mha_assessment: Deadline,
    pub consider_recall: Deadline,
    pub discuss_safeguarding_child: Deadline,
    pub discuss_safeguarding_adult: Deadline,
    pub plan_for_disengagement: Deadline,
    pub file_to_epr: Deadline,
}

impl Default for Defaults {
    /// The values the rules were written with (`docs/rules.md`).
    fn default() -> Self {
        use Deadline::*;
        Self {
            urgent_contact_family_carers: SameDay,
            urgent_consider_cold_call: SameDay,
            urgent_notifications_after_24_hours: SameDay,
            urgent_safeguarding_children_discussion: SameDay,
            urgent_notify_referrer_of_child_concern: SameDay,
            routine_phone_patient: WorkingDays(2),
            routine_write_to_patient: WorkingDays(1),
            routine_notifications_after_letter: WorkingDays(1),
            risk_phone_patient: SameDay,
            risk_write_to_patient: WorkingDays(1),
            risk_contact_electronically: WorkingDays(1),
            risk_contact_family_carers: WorkingDays(1),
            risk_contact_other_providers: WorkingDays(1),
            risk_unannounced_home_visit: WorkingDays(1),
            risk_considerations_with_escalation: SameDay,
            risk_assess_parenting_impact: WorkingDays(1),
            risk_notify_referrer: WorkingDays(1),
            risk_inform_childrens_services: WorkingDays(1),
            no_risk_contact_patient: WorkingDays(2),
            no_risk_contact_family_carers: WorkingDays(2),
            no_risk_step_up: WorkingDays(1),
            no_risk_discharge_per_cpa: WorkingDays(10),
            no_risk_send_discharge_warning_letter: WorkingDays(2),
            wnb_window_days: 183,
            wnb_inform_at_misses: 2,
            wnb_refer_at_misses: 3,
            wnb_consider_impact_on_child: WorkingDays(1),
            wnb_send_was_not_brought_letter: WorkingDays(2),
            wnb_inform_childrens_services: WorkingDays(1),
            wnb_refer_to_childrens_services: SameDay,
            leave_calling_card: Hours(1),
            offer_appointment: SameDay,
            arrange_mdt: WorkingDays(5),
            arrange_mdt_high_risk: WorkingDays(1),
            share_mdt_plan: WorkingDays(2),
            discharge_after_mdt: WorkingDays(2),
            consider_mha_assessment: SameDay,
            consider_recall: SameDay,
            discuss_safeguarding_child: SameDay,
            discuss_safeguarding_adult: WorkingDays(1),
            plan_for_disengagement: WorkingDays(10),
            file_to_epr: WorkingDays(1),
        }
    }
}

impl Defaults {
    /// Reads overrides from JSON: an object with any of the names of [`Defaults`].
    pub fn from_json(text: &str) -> Result<Self, String> {
        let defaults: Self = serde_json::from_str(text).map_err(|e| format!("local defaults: {e}"))?;
        if defaults.wnb_window_days == 0 || defaults.wnb_inform_at_misses == 0 || defaults.wnb_refer_at_misses == 0 {
            return Err("local defaults: the WNB window and thresholds must be at least 1".into());
        }
        Ok(defaults)
    }

    /// Each default's name and value, in declaration order, for the rule table.
    pub fn entries(&self) -> Vec<(String, String)> {
        let value = serde_json::to_value(self).unwrap_or_default();
        let Some(map) = value.as_object() else { return Vec::new() };
        map.iter()
            .map(|(name, value)| {
                let shown = match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (name.clone(), shown)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_read_what_they_write() {
        for d in [
            Deadline::Immediately,
            Deadline::SameDay,
            Deadline::Hours(1),
            Deadline::Hours(4),
            Deadline::Days(7),
            Deadline::WorkingDays(1),
            Deadline::WorkingDays(10),
        ] {
            assert_eq!(d.to_string().parse::<Deadline>(), Ok(d));
        }
        assert!("0 days".parse::<Deadline>().is_err());
        assert!("soon".parse::<Deadline>().is_err());
        assert!("2 fortnights".parse::<Deadline>().is_err());
    }

    #[test]
    fn overrides_keep_the_other_defaults() {
        let d = Defaults::from_json(r#"{"routine_phone_patient": "1 working day"}"#).unwrap();
        assert_eq!(d.routine_phone_patient, Deadline::WorkingDays(1));
        assert_eq!(d.routine_write_to_patient, Defaults::default().routine_write_to_patient);
        let err = Defaults::from_json(r#"{"routine_phone": "1 day"}"#).unwrap_err();
        assert!(err.contains("routine_phone"), "{err}");
        let err = Defaults::from_json(r#"{"file_to_epr": "tomorrow"}"#).unwrap_err();
        assert!(err.contains("tomorrow"), "{err}");
    }
}
