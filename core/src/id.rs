//! Row ids: as JSON carries them, checked against a collection's id type,
//! and as an Arrow id column.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, UInt64Array};
use serde::{Deserialize, Serialize};

use crate::catalog::{CollectionConfig, IdType};
use crate::error::{Error, Result};

/// Longest string id, in bytes.
pub const MAX_STRING_ID_BYTES: usize = 256;

/// A row id as JSON carries it: a non-negative integer or a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// An unsigned integer id.
    U64(u64),
    /// A string id.
    Str(String),
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::U64(v) => write!(f, "{v}"),
            Id::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl Id {
    /// Checks the id against the collection's id type.
    pub fn check(&self, id_type: IdType, field: &str) -> Result<()> {
        match (self, id_type) {
            (Id::U64(_), IdType::U64) => Ok(()),
            (Id::Str(s), IdType::String) => {
                if s.is_empty() || s.len() > MAX_STRING_ID_BYTES {
                    Err(Error::invalid(
                        field,
                        format!("string ids must be 1 to {MAX_STRING_ID_BYTES} bytes"),
                    ))
                } else {
                    Ok(())
                }
            }
            (_, IdType::U64) => Err(Error::invalid(
                field,
                "expected an unsigned integer id (the collection's id_type is u64)",
            )),
            (_, IdType::String) => Err(Error::invalid(
                field,
                "expected a string id (the collection's id_type is string)",
            )),
        }
    }

    /// Parses an id from a URL path segment.
    pub fn parse(text: &str, id_type: IdType) -> Result<Id> {
        let id = match id_type {
            IdType::U64 => Id::U64(text.parse().map_err(|_| {
                Error::invalid("id", format!("{text:?} is not an unsigned integer"))
            })?),
            IdType::String => Id::Str(text.to_string()),
        };
        id.check(id_type, "id")?;
        Ok(id)
    }
}

/// Checks delete ids and builds the id array of a delete record.
pub fn ids_to_array(config: &CollectionConfig, ids: &[Id], field: &str) -> Result<ArrayRef> {
    if ids.is_empty() {
        return Err(Error::invalid(field, "must contain at least one id"));
    }
    for (i, id) in ids.iter().enumerate() {
        id.check(config.id_type, &format!("{field}[{i}]"))?;
    }
    Ok(match config.id_type {
        IdType::U64 => Arc::new(UInt64Array::from_iter_values(ids.iter().filter_map(
            |id| match id {
                Id::U64(v) => Some(*v),
                Id::Str(_) => None,
            },
        ))),
        IdType::String => Arc::new(StringArray::from_iter_values(ids.iter().filter_map(
            |id| match id {
                Id::Str(s) => Some(s.as_str()),
                Id::U64(_) => None,
            },
        ))),
    })
}

/// Reads the id at `row` of an id column (u64 or string).
pub fn id_at(ids: &dyn arrow::array::Array, row: usize) -> Id {
    if let Some(a) = ids.as_any().downcast_ref::<UInt64Array>() {
        Id::U64(a.value(row))
    } else if let Some(a) = ids.as_any().downcast_ref::<StringArray>() {
        Id::Str(a.value(row).to_string())
    } else {
        Id::U64(0)
    }
}
