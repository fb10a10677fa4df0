//! What the aggregates need of an engine, so that each query is written
//! once, as plain text, and runs on either: a connection to run it on
//! (`Engine`), values for its `$n` placeholders (`Arg`), and rows decoded
//! by either driver (`Decoded`). The few writes whose text differs by
//! engine (`store_ceremony`, `store_login`) are the engine's own.

use std::future::Future;
use std::ops::DerefMut;

use sqlx::postgres::{PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Arguments, Database, FromRow};

use super::{CeremonyRow, LoginRows, LoginStored, RegistrationRows, StoreResult};
use crate::clock::Millis;
use crate::domain::{DeviceId, SessionId, UserId};

/// The value of one `$n` placeholder. Both drivers encode a value as it is
/// bound, so a borrowed one is never kept.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    MaybeText(Option<&'a str>),
    Int(i64),
    MaybeInt(Option<i64>),
    Int32(i32),
    Bool(bool),
    /// A typed id, bound as the text it is stored as (lowercase,
    /// hyphenated), so that the columns stay `text` on both engines.
    Id(uuid::Uuid),
    MaybeId(Option<uuid::Uuid>),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(value: &'a str) -> Self {
        Arg::Text(value)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(value: &'a String) -> Self {
        Arg::Text(value)
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(value: Option<&'a str>) -> Self {
        Arg::MaybeText(value)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(value: &'a Option<String>) -> Self {
        Arg::MaybeText(value.as_deref())
    }
}

impl From<Millis> for Arg<'_> {
    fn from(value: Millis) -> Self {
        Arg::Int(value)
    }
}

impl From<Option<Millis>> for Arg<'_> {
    fn from(value: Option<Millis>) -> Self {
        Arg::MaybeInt(value)
    }
}

impl From<i32> for Arg<'_> {
    fn from(value: i32) -> Self {
        Arg::Int32(value)
    }
}

impl From<bool> for Arg<'_> {
    fn from(value: bool) -> Self {
        Arg::Bool(value)
    }
}

impl From<&UserId> for Arg<'_> {
    fn from(value: &UserId) -> Self {
        Arg::Id(*value.as_uuid())
    }
}

impl From<&DeviceId> for Arg<'_> {
    fn from(value: &DeviceId) -> Self {
        Arg::Id(*value.as_uuid())
    }
}

impl From<&SessionId> for Arg<'_> {
    fn from(value: &SessionId) -> Self {
        Arg::Id(*value.as_uuid())
    }
}

impl From<&Option<DeviceId>> for Arg<'_> {
    fn from(value: &Option<DeviceId>) -> Self {
        Arg::MaybeId(value.as_ref().map(|id| *id.as_uuid()))
    }
}

/// Binds `args`, in order, to a fresh argument list of `DB`.
fn arguments<DB>(args: &[Arg<'_>]) -> Result<DB::Arguments, sqlx::Error>
where
    DB: Database,
    for<'a> &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> Option<&'a str>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> Option<i64>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> i32: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> bool: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> Option<String>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut bound = DB::Arguments::default();
    for arg in args {
        match *arg {
            Arg::Text(value) => bound.add(value),
            Arg::MaybeText(value) => bound.add(value),
            Arg::Int(value) => bound.add(value),
            Arg::MaybeInt(value) => bound.add(value),
            Arg::Int32(value) => bound.add(value),
            Arg::Bool(value) => bound.add(value),
            Arg::Id(value) => bound.add(value.hyphenated().to_string()),
            Arg::MaybeId(value) => bound.add(value.map(|id| id.hyphenated().to_string())),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(bound)
}

// The typed ids read from their `text` columns, on either engine: as the
// column's text, then parsed, so that a stored id that is not a UUID is a
// decode error (a 500 for the request), never a panic. As plain `Decode`
// rather than `#[sqlx(try_from = "String")]` because that attribute cannot
// target `Option<DeviceId>` (a session's device), and one way for all
// three reads the same everywhere.
macro_rules! id_column {
    ($($id:ty),*) => {$(
        impl<DB: Database> sqlx::Type<DB> for $id
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: Database> sqlx::Decode<'r, DB> for $id
        where
            String: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(<$id>::parse(<String as sqlx::Decode<'r, DB>>::decode(value)?)?)
            }
        }
    )*};
}

id_column!(UserId, DeviceId, SessionId);

/// A row type either driver can decode.
pub(crate) trait Decoded:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> Decoded for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

/// A connection (or, through `begin`, a transaction on it) that runs a
/// query text with its arguments. Errors stay sqlx's, for the caller's `?`
/// to map (SQLite's group commit looks at them first).
pub(crate) trait Sql: sqlx::Connection {
    fn execute(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

    fn fetch_all<T: Decoded>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Vec<T>, sqlx::Error>> + Send;

    fn fetch_optional<T: Decoded>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Option<T>, sqlx::Error>> + Send;

    fn fetch_one<T: Decoded>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<T, sqlx::Error>> + Send;
}

// One adapter per driver: their query results share no trait to read
// `rows_affected` through, and the rows each decodes are its own type.
impl Sql for SqliteConnection {
    async fn execute(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, sqlx::Error> {
        let args = arguments::<sqlx::Sqlite>(args)?;
        Ok(sqlx::query_with(sql, args).execute(self).await?.rows_affected())
    }

    async fn fetch_all<T: Decoded>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Vec<T>, sqlx::Error> {
        let args = arguments::<sqlx::Sqlite>(args)?;
        sqlx::query_as_with(sql, args).fetch_all(self).await
    }

    async fn fetch_optional<T: Decoded>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Option<T>, sqlx::Error> {
        let args = arguments::<sqlx::Sqlite>(args)?;
        sqlx::query_as_with(sql, args).fetch_optional(self).await
    }

    async fn fetch_one<T: Decoded>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<T, sqlx::Error> {
        let args = arguments::<sqlx::Sqlite>(args)?;
        sqlx::query_as_with(sql, args).fetch_one(self).await
    }
}

impl Sql for PgConnection {
    async fn execute(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, sqlx::Error> {
        let args = arguments::<sqlx::Postgres>(args)?;
        Ok(sqlx::query_with(sql, args).execute(self).await?.rows_affected())
    }

    async fn fetch_all<T: Decoded>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Vec<T>, sqlx::Error> {
        let args = arguments::<sqlx::Postgres>(args)?;
        sqlx::query_as_with(sql, args).fetch_all(self).await
    }

    async fn fetch_optional<T: Decoded>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Option<T>, sqlx::Error> {
        let args = arguments::<sqlx::Postgres>(args)?;
        sqlx::query_as_with(sql, args).fetch_optional(self).await
    }

    async fn fetch_one<T: Decoded>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<T, sqlx::Error> {
        let args = arguments::<sqlx::Postgres>(args)?;
        sqlx::query_as_with(sql, args).fetch_one(self).await
    }
}

/// One database engine behind the store: how a query gets its connection,
/// and the writes it does its own way.
pub(crate) trait Engine: Send + Sync + 'static {
    type Conn: Sql + Send;
    /// A connection lent for one step; given back when dropped.
    type Lease: DerefMut<Target = Self::Conn> + Send;

    /// A connection whose reads are committed, and whose transactions are
    /// its own.
    fn db(&self) -> impl Future<Output = StoreResult<Self::Lease>> + Send;

    /// A connection for the reads at a sign-in's finish, which on SQLite
    /// may see a group's writes not yet committed (see `SqliteStore`).
    fn read_db(&self) -> impl Future<Output = StoreResult<Self::Lease>> + Send;

    fn store_ceremony(
        &self,
        ceremony: &CeremonyRow,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    fn store_login(
        &self,
        login: &LoginRows<'_>,
    ) -> impl Future<Output = StoreResult<LoginStored>> + Send;

    /// A registration's writes (see `RegistrationRows`), bound by
    /// `registration_args`.
    fn store_registration(
        &self,
        rows: &RegistrationRows<'_>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// One statement that writes, where it may share its commit with other
    /// writes (SQLite's group commit, see `SqliteStore`); answered once it
    /// is as durable as a statement of its own. On PostgreSQL, a statement
    /// of its own. `statement` must be a single statement.
    fn write_shared<T: Decoded>(
        &self,
        statement: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = StoreResult<Vec<T>>> + Send;

    /// `write_shared` for a statement that returns no rows.
    fn execute_shared(
        &self,
        statement: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Readiness: the database answers and takes writes.
    fn ping_db(&self) -> impl Future<Output = StoreResult<()>> + Send;

    /// Connections open, and how many of them are idle.
    fn pool_use(&self) -> (u32, usize);
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;

    #[tokio::test]
    async fn ids_are_bound_as_hyphenated_text_and_a_stored_non_uuid_is_a_decode_error() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        let (user, device) = (UserId::new(), Some(DeviceId::new()));
        let sql = "select $1, $2";
        let args = [(&user).into(), (&device).into()];
        let (text, _): (String, String) = conn.fetch_one(sql, &args).await.unwrap();
        assert_eq!(text, user.as_uuid().hyphenated().to_string());
        let read: (UserId, Option<DeviceId>) = conn.fetch_one(sql, &args).await.unwrap();
        assert_eq!(read, (user, device));
        let none: (UserId, Option<DeviceId>) =
            conn.fetch_one(sql, &[(&user).into(), (&None::<DeviceId>).into()]).await.unwrap();
        assert_eq!(none, (user, None));

        let bad: [(&str, &[Arg<'_>]); 2] =
            [("select 'u-alice', null", &[]), ("select $1, 'device-x'", &[(&user).into()])];
        for (sql, args) in bad {
            let read = conn.fetch_one::<(UserId, Option<DeviceId>)>(sql, args).await;
            assert!(matches!(read, Err(sqlx::Error::ColumnDecode { .. })), "{sql}: {read:?}");
        }
        let session = conn.fetch_one::<(SessionId,)>("select 'x-session'", &[]).await;
        assert!(matches!(session, Err(sqlx::Error::ColumnDecode { .. })), "{session:?}");
    }
}
