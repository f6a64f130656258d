//! The shared language of Tether: the typed episode, its JSON, and the disengagement
//! pathway as pure rules (`docs/rules.md`).
//!
//! Both the phone's core and the server depend on this crate, so that a device with no
//! signal and the server compute the same actions from the same records.
//!
//! - [`ids`]: [`EpisodeId`] and [`EventId`], UUIDs of distinct types, with their SQL
//!   conversions behind the `rusqlite` and `postgres` features.
//! - [`model`]: the episode, its facts and every kind of record, as types.
//! - [`json`]: episode JSON in and out, with validation errors that name the record and
//!   the field and never a patient identifier.
//! - [`pathway`]: `evaluate(episode, now, calendar)`, the policy's rules. It does no I/O,
//!   reads no clock and knows nothing of Automerge.
//! - [`document`]: one Automerge document per episode, changed through typed operations
//!   and read back as an [`Episode`] with its conflicts.
//! - [`limits`]: every limit on what an episode may hold (text fields, records, the plan,
//!   the episode's budget), checked by the core and the server alike.
//! - [`sync`]: the sync protocol's messages, and the checked Automerge sync steps.
//! - [`inflate`]: a bound on what Automerge's deflated bytes may inflate to.

pub mod document;
pub mod ids;
pub mod inflate;
pub mod json;
pub mod limits;
pub mod model;
pub mod pathway;
pub mod sync;

pub use json::{Strictness, ValidationError};
pub use model::*;
