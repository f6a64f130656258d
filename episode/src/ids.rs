//! The ids of episodes and events: UUIDs (v7 when made by Tether), each its own type so
//! that an event's id cannot be passed where an episode's is meant.
//!
//! Both are `#[serde(transparent)]`: in JSON, in the Automerge document and in the sync
//! protocol's postcard messages they are exactly the UUID they wrap, so the types change
//! nothing that is stored or sent.
//!
//! Their SQL conversions live here, because the orphan rule allows them only in the crate
//! that defines the type, behind features so that the default build links no database
//! crate: `rusqlite` (the phone's store and the server's SQLite) and `postgres` (the
//! server's PostgreSQL, through `postgres-types`). Both store an id as text, the
//! hyphenated lower-case UUID, as every schema of Tether has.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// The id that is this UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID itself.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                text.parse().map(Self)
            }
        }

        /// The hyphenated lower-case UUID, as stored and sent.
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        /// The UUID alone, as `Uuid` prints it: ids appear in test failures and error
        /// messages in the same form as in the JSON.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        #[cfg(feature = "rusqlite")]
        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.to_string()))
            }
        }

        #[cfg(feature = "rusqlite")]
        impl rusqlite::types::FromSql for $name {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                value.as_str()?.parse().map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }

        #[cfg(feature = "postgres")]
        impl postgres_types::ToSql for $name {
            fn to_sql(
                &self,
                ty: &postgres_types::Type,
                out: &mut bytes::BytesMut,
            ) -> Result<postgres_types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.to_string().as_str().to_sql(ty, out)
            }

            fn accepts(ty: &postgres_types::Type) -> bool {
                <&str as postgres_types::ToSql>::accepts(ty)
            }

            postgres_types::to_sql_checked!();
        }

        #[cfg(feature = "postgres")]
        impl<'a> postgres_types::FromSql<'a> for $name {
            fn from_sql(
                ty: &postgres_types::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                Ok(<&str as postgres_types::FromSql>::from_sql(ty, raw)?.parse()?)
            }

            fn accepts(ty: &postgres_types::Type) -> bool {
                <&str as postgres_types::FromSql>::accepts(ty)
            }
        }
    };
}

uuid_id!(
    /// The id of an episode.
    EpisodeId
);
uuid_id!(
    /// The id of an event (a record of the episode).
    EventId
);

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "0195a1b2-0000-7000-8000-000000000011";

    #[test]
    fn an_id_is_its_uuid_in_json_postcard_and_text() {
        let uuid: Uuid = TEXT.parse().unwrap();
        let episode = EpisodeId::from_uuid(uuid);
        assert_eq!(serde_json::to_string(&episode).unwrap(), serde_json::to_string(&uuid).unwrap());
        assert_eq!(postcard::to_allocvec(&episode).unwrap(), postcard::to_allocvec(&uuid).unwrap());
        assert_eq!(serde_json::from_str::<EventId>(&format!("\"{TEXT}\"")).unwrap(), EventId::from_uuid(uuid));
        assert_eq!(episode.to_string(), TEXT);
        assert_eq!(format!("{episode:?}"), format!("{uuid:?}"));
        assert_eq!(TEXT.parse::<EpisodeId>().unwrap(), episode);
        assert!("not-a-uuid".parse::<EventId>().is_err());
        assert!(serde_json::from_str::<EpisodeId>("\"not-a-uuid\"").is_err());
    }

    #[cfg(feature = "rusqlite")]
    #[test]
    fn an_id_is_stored_in_sqlite_as_its_text_and_read_back() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let id: EpisodeId = TEXT.parse().unwrap();
        let (text, back): (String, EpisodeId) =
            conn.query_row("SELECT ?1, ?1", [id], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((text.as_str(), back), (TEXT, id));
        let damaged = conn.query_row("SELECT 'not-a-uuid'", [], |r| r.get::<_, EventId>(0));
        assert!(matches!(damaged, Err(rusqlite::Error::FromSqlConversionFailure(..))), "{damaged:?}");
        let number = conn.query_row("SELECT 7", [], |r| r.get::<_, EventId>(0));
        assert!(matches!(number, Err(rusqlite::Error::InvalidColumnType(..))), "{number:?}");
    }
}
