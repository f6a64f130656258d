//! The phone's core: the offline episode store, the recording API and the sync engine.
//!
//! Not built yet: issue 3 (the offline store and `tether-field`) and issue 4 (the sync
//! engine) fill this crate. It holds no code until then, so nothing can mistake it for
//! a working store.
