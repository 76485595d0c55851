//! Rows of a file, checked one by one against a collection: the good ones
//! become an upsert batch, each bad one an error naming its row and field.
//! Problems of a whole column (missing, unknown, of a type that cannot
//! hold the attribute) fail the batch instead.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, FixedSizeListArray, Float32Array, RecordBatch,
    StringArray, UInt32Array, UInt64Array,
};
use arrow::compute::{CastOptions, cast_with_options, take};
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, UInt64Type};

use crate::catalog::{AttributeType, CollectionConfig, IdType};
use crate::error::{Error, Result};
use crate::id::{Id, MAX_STRING_ID_BYTES};
use crate::segment::{attribute_data_type, upsert_schema};

/// Which file columns hold the id and the vector; every other column must
/// be one of the collection's attributes.
#[derive(Debug, Clone)]
pub struct Columns {
    /// The id column's name (default `id`).
    pub id: String,
    /// The vector column's name (default `vector`).
    pub vector: String,
    /// Skip columns that are not attributes instead of refusing the file.
    pub ignore_unknown: bool,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            id: "id".into(),
            vector: "vector".into(),
            ignore_unknown: false,
        }
    }
}

/// A bad row: its number in the file (from 0) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    /// The row's number in its file, from 0 (for JSON Lines, the line's).
    pub row: u64,
    /// The column or JSON field at fault.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "row {}, {}: {}", self.row, self.field, self.message)
    }
}

/// One batch of a file after checking.
#[derive(Debug)]
pub struct Checked {
    /// The good rows, in the collection's upsert schema.
    pub batch: RecordBatch,
    /// Each good row's number in the file.
    pub rows: Vec<u64>,
    /// The bad rows.
    pub errors: Vec<RowError>,
}

/// Checks the rows of `batch`, whose first row is row `first_row` of its
/// file.
pub fn check_batch(
    config: &CollectionConfig,
    columns: &Columns,
    first_row: u64,
    batch: &RecordBatch,
) -> Result<Checked> {
    let schema = batch.schema();
    for field in schema.fields() {
        let name = field.name();
        if name != &columns.id
            && name != &columns.vector
            && config.attribute(name).is_none()
            && !columns.ignore_unknown
        {
            let known: Vec<_> = config.attributes.iter().map(|a| a.name.as_str()).collect();
            return Err(Error::invalid(
                name.as_str(),
                format!(
                    "the file has a column {name:?} that is not an attribute of the collection \
                     ({known:?}); drop it or skip unknown columns"
                ),
            ));
        }
    }
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| Error::invalid(name, format!("the file has no column {name:?}")))
    };
    let n = batch.num_rows();
    let mut errors: Vec<Option<RowError>> = vec![None; n];
    let mut fail = |row: usize, field: &str, message: String| {
        if errors[row].is_none() {
            errors[row] = Some(RowError {
                row: first_row + row as u64,
                field: field.to_string(),
                message,
            });
        }
    };

    let ids = check_ids(config, &columns.id, column(&columns.id)?, &mut fail)?;
    let vectors = check_vectors(config, &columns.vector, column(&columns.vector)?, &mut fail)?;
    let mut attributes = Vec::with_capacity(config.attributes.len());
    for attr in &config.attributes {
        attributes.push(match batch.column_by_name(&attr.name) {
            Some(values) => check_attribute(&attr.name, attr.ty, values, &mut fail)?,
            None => arrow::array::new_null_array(&attribute_data_type(attr.ty), n),
        });
    }

    let good: Vec<u32> = (0..n as u32)
        .filter(|&r| errors[r as usize].is_none())
        .collect();
    let take_good = |a: &ArrayRef| -> Result<ArrayRef> {
        if good.len() == n {
            Ok(Arc::clone(a))
        } else {
            Ok(take(a.as_ref(), &UInt32Array::from(good.clone()), None)?)
        }
    };
    let mut out = vec![take_good(&ids)?, take_good(&vectors)?];
    for a in &attributes {
        out.push(take_good(a)?);
    }
    Ok(Checked {
        batch: RecordBatch::try_new(upsert_schema(config), out)?,
        rows: good.iter().map(|&r| first_row + u64::from(r)).collect(),
        errors: errors.into_iter().flatten().collect(),
    })
}

/// Casts `values` to `to`; a value the cast cannot carry becomes null (the
/// caller compares validity to find it).
fn cast_lenient(name: &str, values: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    let options = CastOptions {
        safe: true,
        ..Default::default()
    };
    cast_with_options(values, to, &options).map_err(|_| {
        Error::invalid(
            name,
            format!(
                "column {name:?} is {}, which cannot be read as {to}",
                values.data_type()
            ),
        )
    })
}

type Fail<'a> = dyn FnMut(usize, &str, String) + 'a;

fn check_ids(
    config: &CollectionConfig,
    name: &str,
    values: &ArrayRef,
    fail: &mut Fail<'_>,
) -> Result<ArrayRef> {
    match config.id_type {
        IdType::U64 => {
            if !values.data_type().is_integer() {
                return Err(Error::invalid(
                    name,
                    format!(
                        "the collection has u64 ids; column {name:?} is {}",
                        values.data_type()
                    ),
                ));
            }
            let cast = cast_lenient(name, values, &DataType::UInt64)?;
            let ids = cast.as_primitive::<UInt64Type>();
            for r in 0..ids.len() {
                if values.is_null(r) {
                    fail(r, name, "the id is null".into());
                } else if ids.is_null(r) {
                    fail(r, name, "ids must be non-negative integers".into());
                }
            }
            Ok(Arc::new(UInt64Array::from_iter_values(
                (0..ids.len()).map(|r| if ids.is_null(r) { 0 } else { ids.value(r) }),
            )))
        }
        IdType::String => {
            if !matches!(
                values.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) {
                return Err(Error::invalid(
                    name,
                    format!(
                        "the collection has string ids; column {name:?} is {}",
                        values.data_type()
                    ),
                ));
            }
            let cast = cast_lenient(name, values, &DataType::Utf8)?;
            let ids = cast.as_string::<i32>();
            for r in 0..ids.len() {
                if ids.is_null(r) {
                    fail(r, name, "the id is null".into());
                } else if ids.value(r).is_empty() || ids.value(r).len() > MAX_STRING_ID_BYTES {
                    fail(
                        r,
                        name,
                        format!("string ids must be 1 to {MAX_STRING_ID_BYTES} bytes"),
                    );
                }
            }
            Ok(Arc::new(StringArray::from_iter_values(
                (0..ids.len()).map(|r| if ids.is_null(r) { "" } else { ids.value(r) }),
            )))
        }
    }
}

fn check_vectors(
    config: &CollectionConfig,
    name: &str,
    values: &ArrayRef,
    fail: &mut Fail<'_>,
) -> Result<ArrayRef> {
    let dim = config.dimension as usize;
    let n = values.len();
    let item = match values.data_type() {
        DataType::FixedSizeList(f, _) | DataType::List(f) | DataType::LargeList(f) => {
            f.data_type().clone()
        }
        other => {
            return Err(Error::invalid(
                name,
                format!("column {name:?} is {other}; vectors must be lists of floats"),
            ));
        }
    };
    if !item.is_floating() && !item.is_integer() {
        return Err(Error::invalid(
            name,
            format!("column {name:?} holds lists of {item}; vectors must be lists of floats"),
        ));
    }
    let list = Arc::new(Field::new("item", DataType::Float32, true));
    let as_lists = cast_lenient(name, values, &DataType::LargeList(list))?;
    let lists = as_lists.as_list::<i64>();
    let mut flat = Vec::with_capacity(n * dim);
    for r in 0..n {
        let fill = |flat: &mut Vec<f32>| flat.extend(std::iter::repeat_n(0.0, dim));
        if lists.is_null(r) {
            fail(r, name, "the vector is null".into());
            fill(&mut flat);
            continue;
        }
        let v = lists.value(r);
        let v = v.as_primitive::<Float32Type>();
        if v.len() != dim {
            fail(
                r,
                name,
                format!(
                    "expected {dim} components (the collection's dimension), got {}",
                    v.len()
                ),
            );
            fill(&mut flat);
            continue;
        }
        match (0..dim).find(|&i| v.is_null(i) || !v.value(i).is_finite()) {
            Some(i) => {
                fail(
                    r,
                    &format!("{name}[{i}]"),
                    "components must be finite 32-bit floats".into(),
                );
                fill(&mut flat);
            }
            None => flat.extend_from_slice(v.values()),
        }
    }
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    Ok(Arc::new(FixedSizeListArray::try_new(
        item,
        dim as i32,
        Arc::new(Float32Array::from(flat)),
        None,
    )?))
}

fn check_attribute(
    name: &str,
    ty: AttributeType,
    values: &ArrayRef,
    fail: &mut Fail<'_>,
) -> Result<ArrayRef> {
    let to = attribute_data_type(ty);
    let compatible = match ty {
        AttributeType::Bool => values.data_type() == &DataType::Boolean,
        AttributeType::I64 => values.data_type().is_integer(),
        AttributeType::F64 => values.data_type().is_numeric(),
        AttributeType::String => matches!(
            values.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ),
        AttributeType::StringList => matches!(
            values.data_type(),
            DataType::List(f) | DataType::LargeList(f)
                if matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        ),
    } || values.data_type() == &DataType::Null;
    if !compatible {
        return Err(Error::invalid(
            name,
            format!(
                "attribute {name} is {} but the file's column is {}",
                serde_json::to_value(ty).unwrap_or_default(),
                values.data_type()
            ),
        ));
    }
    let cast = cast_lenient(name, values, &to)?;
    for r in 0..cast.len() {
        if values.is_valid(r) && cast.is_null(r) {
            fail(r, name, format!("value out of range for {to}"));
        }
    }
    if ty == AttributeType::StringList {
        let lists = cast.as_list::<i32>();
        for r in 0..lists.len() {
            if lists.is_valid(r) && lists.value(r).null_count() > 0 {
                fail(r, name, "a list of strings cannot hold a null".into());
            }
        }
    }
    if ty == AttributeType::F64 {
        let f = cast.as_primitive::<Float64Type>();
        for r in 0..f.len() {
            if f.is_valid(r) && !f.value(r).is_finite() {
                fail(r, name, "must be a finite number".into());
            }
        }
    }
    Ok(cast)
}

/// The error of a row whose id an earlier row had; `lines`: the file
/// counts lines from 1 (JSON Lines), not rows from 0.
pub(crate) fn duplicate_message(id: &Id, first_row: u64, lines: bool) -> String {
    let first = if lines {
        format!("line {}", first_row + 1)
    } else {
        format!("row {first_row}")
    };
    format!("duplicate id {id} (first at {first}); an import writes each id once")
}

/// Drops the rows of `checked` whose id an earlier row of the import
/// already had (recorded in `seen`), turning each into an error: an import
/// writes every id once.
pub fn drop_repeated_ids(
    checked: Checked,
    seen: &mut std::collections::HashMap<Id, u64>,
    id_field: &str,
    lines: bool,
) -> Result<Checked> {
    let ids = checked.batch.column(0);
    let mut keep = Vec::with_capacity(ids.len());
    let mut errors = checked.errors;
    for r in 0..ids.len() {
        let id = crate::id::id_at(ids.as_ref(), r);
        let row = checked.rows[r];
        match seen.entry(id) {
            std::collections::hash_map::Entry::Occupied(first) => {
                errors.push(RowError {
                    row,
                    field: id_field.to_string(),
                    message: duplicate_message(first.key(), *first.get(), lines),
                });
                keep.push(false);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(row);
                keep.push(true);
            }
        }
    }
    if keep.iter().all(|k| *k) {
        return Ok(Checked { errors, ..checked });
    }
    let mask = BooleanArray::from(keep.clone());
    let batch = arrow::compute::filter_record_batch(&checked.batch, &mask)?;
    let rows = checked
        .rows
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(r, _)| *r)
        .collect();
    errors.sort_by_key(|e| e.row);
    Ok(Checked {
        batch,
        rows,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::AttributeDef;
    use arrow::array::{Float64Array, Int32Array, Int64Array, ListBuilder, StringBuilder};
    use arrow::datatypes::{Int64Type, Schema};

    fn config() -> CollectionConfig {
        CollectionConfig::for_tests(&[("year", AttributeType::I64), ("score", AttributeType::F64)])
    }

    fn vectors(rows: &[Option<Vec<f64>>]) -> ArrayRef {
        let mut b = ListBuilder::new(arrow::array::Float64Builder::new());
        for r in rows {
            match r {
                Some(v) => {
                    b.values().append_slice(v);
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        Arc::new(b.finish())
    }

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap()
    }

    #[test]
    fn good_rows_pass_and_bad_rows_are_named() {
        let b = batch(vec![
            (
                "id",
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    Some(-2),
                    None,
                    Some(4),
                    Some(5),
                    Some(6),
                ])),
            ),
            (
                "vector",
                vectors(&[
                    Some(vec![1.0, 2.0]),
                    Some(vec![1.0, 2.0]),
                    Some(vec![1.0, 2.0]),
                    Some(vec![1.0]),
                    Some(vec![1.0, f64::NAN]),
                    Some(vec![3.0, 4.0]),
                ]),
            ),
            (
                "year",
                Arc::new(Int32Array::from(vec![
                    Some(2020),
                    None,
                    None,
                    None,
                    None,
                    None,
                ])),
            ),
            (
                "score",
                Arc::new(Float64Array::from(vec![
                    Some(0.5),
                    None,
                    None,
                    None,
                    None,
                    Some(f64::INFINITY),
                ])),
            ),
        ]);
        let checked = check_batch(&config(), &Columns::default(), 100, &b).unwrap();
        assert_eq!(checked.rows, vec![100]);
        assert_eq!(checked.batch.num_rows(), 1);
        let fields: Vec<(u64, &str)> = checked
            .errors
            .iter()
            .map(|e| (e.row, e.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            vec![
                (101, "id"),
                (102, "id"),
                (103, "vector"),
                (104, "vector[1]"),
                (105, "score")
            ]
        );
        let year = checked.batch.column(2).as_primitive::<Int64Type>();
        assert_eq!(year.value(0), 2020);
    }

    #[test]
    fn whole_column_problems_fail_the_batch() {
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        let v = vectors(&[Some(vec![1.0, 2.0])]);
        let unknown = batch(vec![
            ("id", Arc::clone(&ids)),
            ("vector", Arc::clone(&v)),
            ("colour", Arc::new(StringArray::from(vec!["red"]))),
        ]);
        let err = check_batch(&config(), &Columns::default(), 0, &unknown).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let ignoring = Columns {
            ignore_unknown: true,
            ..Columns::default()
        };
        assert_eq!(
            check_batch(&config(), &ignoring, 0, &unknown)
                .unwrap()
                .batch
                .num_rows(),
            1
        );
        let wrong_type = batch(vec![
            ("id", Arc::clone(&ids)),
            ("vector", Arc::clone(&v)),
            ("year", Arc::new(StringArray::from(vec!["1999"]))),
        ]);
        assert!(check_batch(&config(), &Columns::default(), 0, &wrong_type).is_err());
        let no_vector = batch(vec![("id", ids)]);
        let err = check_batch(&config(), &Columns::default(), 0, &no_vector).unwrap_err();
        assert!(err.to_string().contains("vector"), "{err}");
    }

    #[test]
    fn repeated_ids_across_batches_are_errors() {
        let mut seen = std::collections::HashMap::new();
        let make = |ids: Vec<i64>, first: u64| {
            let n = ids.len();
            let b = batch(vec![
                ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
                ("vector", vectors(&vec![Some(vec![1.0, 2.0]); n])),
            ]);
            check_batch(&config(), &Columns::default(), first, &b).unwrap()
        };
        let a = drop_repeated_ids(make(vec![1, 2], 0), &mut seen, "id", false).unwrap();
        assert!(a.errors.is_empty());
        let b = drop_repeated_ids(make(vec![3, 1], 2), &mut seen, "id", false).unwrap();
        assert_eq!(b.rows, vec![2]);
        assert_eq!(b.errors.len(), 1);
        assert!(
            b.errors[0].message.contains("first at row 0"),
            "{:?}",
            b.errors
        );
    }

    #[test]
    fn string_lists_and_strings_read_as_attributes() {
        let mut cfg = config();
        cfg.id_type = IdType::String;
        cfg.attributes = vec![AttributeDef {
            name: "tags".into(),
            ty: AttributeType::StringList,
        }];
        let mut tags = ListBuilder::new(StringBuilder::new());
        tags.values().append_value("a");
        tags.append(true);
        tags.values().append_null();
        tags.append(true);
        let b = batch(vec![
            (
                "key",
                Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef,
            ),
            (
                "emb",
                vectors(&[Some(vec![1.0, 2.0]), Some(vec![1.0, 2.0])]),
            ),
            ("tags", Arc::new(tags.finish())),
        ]);
        let columns = Columns {
            id: "key".into(),
            vector: "emb".into(),
            ignore_unknown: false,
        };
        let checked = check_batch(&cfg, &columns, 0, &b).unwrap();
        assert_eq!(checked.rows, vec![0]);
        assert_eq!(
            checked
                .errors
                .iter()
                .map(|e| (e.row, e.field.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "tags")],
            "a null inside a string list is refused, not read as \"\""
        );
        assert_eq!(
            crate::id::id_at(checked.batch.column(0).as_ref(), 0),
            Id::Str("x".into())
        );
    }
}
