//! What both backends share below the trait: helpers for writing SQL. Neither backend imports
//! the other; what they have in common lives here.

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
pub(crate) fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// ---- how domain values are stored ------------------------------------------------------------
//
// One definition per value for both backends, so a row type can derive `sqlx::FromRow` once
// (generic over the row) instead of each backend mapping columns by hand. A timestamp is the one
// value stored differently: INTEGER milliseconds on SQLite, `timestamptz` on PostgreSQL.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Postgres, Sqlite, Type};

use super::{DeliveryState, ScriptStatus};
use crate::domain::monitor::PagingPeriod;
use crate::domain::schedule::{MaintenanceWindow, WorkingHours};
use crate::domain::{
    AgentRunStatus, AlertKind, AlertState, ApiKeyId, Destination, EventKind, OwnerId, PlaybookId,
    Priority, RunStatus, Scopes, ScriptId, ServiceId, ServiceState, SnapshotAction, SnapshotId,
    TargetId, TeamId, Timestamp, WindowId,
};

impl Type<Sqlite> for Timestamp {
    fn type_info() -> <Sqlite as Database>::TypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &<Sqlite as Database>::TypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Timestamp {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<Sqlite>>::encode(self.millis(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Timestamp {
    fn decode(value: <Sqlite as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self::from_millis(<i64 as Decode<Sqlite>>::decode(value)?))
    }
}

impl Type<Postgres> for Timestamp {
    fn type_info() -> <Postgres as Database>::TypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &<Postgres as Database>::TypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Timestamp {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode(self.datetime(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for Timestamp {
    fn decode(value: <Postgres as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self::from_datetime(
            <DateTime<Utc> as Decode<Postgres>>::decode(value)?,
        ))
    }
}

/// Ids are stored as their integer.
macro_rules! integer_id {
    ($($t:ident),*) => {$(
        impl<DB: Database> Type<DB> for $t where i64: Type<DB> {
            fn type_info() -> DB::TypeInfo {
                <i64 as Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <i64 as Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: Database> Encode<'q, DB> for $t where i64: Encode<'q, DB> {
            fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <i64 as Encode<'q, DB>>::encode(self.0, buf)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $t where i64: Decode<'r, DB> {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok(Self(<i64 as Decode<'r, DB>>::decode(value)?))
            }
        }
    )*};
}
integer_id!(
    ServiceId, SnapshotId, TeamId, TargetId, WindowId, ScriptId, PlaybookId
);

/// Text values: written with `$to`, read back with `$from` (which may refuse a value).
macro_rules! text_value {
    ($t:ty, |$v:ident| $to:expr, |$s:ident| $from:expr) => {
        impl<DB: Database> Type<DB> for $t
        where
            for<'a> &'a str: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <&str as Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <&str as Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: Database> Encode<'q, DB> for $t
        where
            String: Encode<'q, DB>,
        {
            fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
                let $v = self;
                <String as Encode<'q, DB>>::encode(String::from($to), buf)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $t
        where
            &'r str: Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let $s = <&'r str as Decode<'r, DB>>::decode(value)?;
                $from
            }
        }
    };
}

/// Enums stored as their name (`as_str` / `parse`).
macro_rules! text_enum {
    ($($t:ident),*) => {$(
        text_value!($t, |v| v.as_str(), |s| $t::parse(s).ok_or_else(|| {
            format!("invalid {} in database: {s:?}", stringify!($t)).into()
        }));
    )*};
}
text_enum!(
    Priority,
    ServiceState,
    SnapshotAction,
    AlertKind,
    AlertState,
    EventKind,
    RunStatus,
    AgentRunStatus,
    PagingPeriod,
    DeliveryState,
    ScriptStatus
);

text_value!(ApiKeyId, |v| v.0.as_str(), |s| Ok(ApiKeyId(s.to_owned())));
text_value!(OwnerId, |v| v.0.as_str(), |s| Ok(OwnerId(s.to_owned())));
text_value!(Scopes, |v| v.to_list_string(), |s| Ok(Scopes::parse_list(
    s
)?));

/// Values stored as JSON text (PostgreSQL `jsonb`, which the stores select cast to text).
macro_rules! json_text {
    ($($t:ty),*) => {$(
        text_value!($t, |v| serde_json::to_string(v).unwrap_or_default(), |s| Ok(serde_json::from_str(s)?));
    )*};
}
json_text!(WorkingHours, MaintenanceWindow, Destination);

// Stored through their record forms (`records.rs`), which fix the column's format.
text_value!(
    super::Service,
    |v| serde_json::to_string(&super::records::ServiceRecord::from(v)).unwrap_or_default(),
    |s| Ok(serde_json::from_str::<super::records::ServiceRecord>(s)?.into())
);
text_value!(
    super::TargetConfig,
    |v| serde_json::to_string(&super::records::TargetConfigRecord::from(v)).unwrap_or_default(),
    |s| Ok(serde_json::from_str::<super::records::TargetConfigRecord>(s)?.into())
);

/// A JSON text column read into a type defined elsewhere (`#[sqlx(try_from = "JsonText<T>")]`).
pub(crate) struct JsonText<T>(pub T);

impl<T, DB: Database> Type<DB> for JsonText<T>
where
    for<'a> &'a str: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <&str as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <&str as Type<DB>>::compatible(ty)
    }
}

impl<'r, T: serde::de::DeserializeOwned, DB: Database> Decode<'r, DB> for JsonText<T>
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(serde_json::from_str(
            <&'r str as Decode<'r, DB>>::decode(value)?,
        )?))
    }
}

impl From<JsonText<BTreeMap<String, String>>> for BTreeMap<String, String> {
    fn from(v: JsonText<BTreeMap<String, String>>) -> Self {
        v.0
    }
}

impl From<JsonText<BTreeMap<String, Vec<crate::playbook::vars::ParamPart>>>>
    for BTreeMap<String, Vec<crate::playbook::vars::ParamPart>>
{
    fn from(v: JsonText<BTreeMap<String, Vec<crate::playbook::vars::ParamPart>>>) -> Self {
        v.0
    }
}

impl From<JsonText<serde_json::Value>> for serde_json::Value {
    fn from(v: JsonText<serde_json::Value>) -> Self {
        v.0
    }
}

/// A script interpreter, stored as its wire name (`#[sqlx(try_from = "InterpreterText")]`).
pub(crate) struct InterpreterText(medic_protocol::Interpreter);

impl<DB: Database> Type<DB> for InterpreterText
where
    for<'a> &'a str: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <&str as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <&str as Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for InterpreterText
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let s = <&'r str as Decode<'r, DB>>::decode(value)?;
        super::parse_interpreter(s)
            .map(Self)
            .ok_or_else(|| format!("invalid interpreter in database: {s:?}").into())
    }
}

impl From<InterpreterText> for medic_protocol::Interpreter {
    fn from(v: InterpreterText) -> Self {
        v.0
    }
}

/// A row type `T` is read through `$row` (derived `FromRow`) and `From<$row>`.
macro_rules! from_row_via {
    ($t:ty, $row:ty) => {
        impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for $t
        where
            $row: sqlx::FromRow<'r, R>,
        {
            fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
                <$row as sqlx::FromRow<'r, R>>::from_row(row)
                    .and_then(|r| Self::try_from(r).map_err(|e| sqlx::Error::Decode(e.into())))
            }
        }
    };
}
pub(crate) use from_row_via;
