//! One test per row of every table of the rules (`docs/rules.md`), and per warning;
//! every action a scenario raises is checked against its printed row.
//!
//! Dates: Monday 2 March 2026 is a working day in GMT (UTC = local). Each scenario
//! says what it shows; the expected text lists every action (file_to_epr aside unless
//! shown) as `code state active_from -> due owner [cites; priority; from trigger]`.

mod across;
mod child_not_brought;
mod home_treatment;
mod in_service_no_risk;
mod in_service_risk;
mod routine_referral;
mod support;
mod table;
mod urgent_referral;
