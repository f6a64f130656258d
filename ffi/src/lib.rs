//! The client core for Kotlin, Swift and Python, through UniFFI.
//!
//! Not built yet: issue 6 fills this crate once the client core exists.
