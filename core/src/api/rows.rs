//! Rows as users send them (JSON, row-wise or columnar) and their checked
//! conversion to Arrow batches. Every error names the offending field, e.g.
//! `rows[3].vector[7]` or `columns.attributes.year[12]`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, FixedSizeListArray, Float32Array, Float64Builder, Int64Builder,
    ListBuilder, RecordBatch, StringArray, StringBuilder, UInt64Array,
};
use arrow::datatypes::{DataType, Field};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::vectors::{VectorIn, VectorsIn};
use crate::catalog::{AttributeType, CollectionConfig, IdType};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::segment::upsert_schema;

/// One row of a row-wise upsert.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RowIn {
    /// Its id.
    pub id: Id,
    /// Its vector: numbers, or base64 of little-endian `f32`s.
    pub vector: VectorIn,
    /// Its attributes, by name.
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// Write only if the visible row with this id has this version (its
    /// LSN); 0: only if no row with the id is visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
}

/// A columnar upsert: parallel arrays, for bulk loads.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnsIn {
    /// The ids, one per row.
    pub ids: Vec<Id>,
    /// The vectors: one per row, or all rows' `f32`s as one base64 string.
    pub vectors: VectorsIn,
    /// Attribute columns, by name, one value per row.
    #[serde(default)]
    pub attributes: HashMap<String, Vec<Value>>,
    /// Per row, as `rows[i].if_version` (null: no condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_versions: Option<Vec<Option<u64>>>,
}

/// One row of a patch: new values for some of its attributes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PatchRowIn {
    /// The row's id; a visible row with it must exist.
    pub id: Id,
    /// The attributes to set, by name (null clears one); the others keep
    /// their values, and the vector stays.
    pub attributes: Map<String, Value>,
    /// Patch only if the visible row has this version (its LSN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
}

/// Checks a patch's rows: ids (unique, of the collection's type) and
/// attribute values. Returns, per attribute of the collection, the values
/// set and whether each row sets one.
pub fn patch_values(
    config: &CollectionConfig,
    rows: &[PatchRowIn],
) -> Result<Vec<(ArrayRef, Vec<bool>)>> {
    if rows.is_empty() {
        return Err(Error::invalid("rows", "must contain at least one row"));
    }
    let mut seen = HashMap::with_capacity(rows.len());
    for (r, row) in rows.iter().enumerate() {
        let field = format!("rows[{r}].id");
        row.id.check(config.id_type, &field)?;
        if let Some(first) = seen.insert(&row.id, r) {
            return Err(Error::invalid(
                field,
                format!(
                    "duplicate id {} in one request (first at index {first})",
                    row.id
                ),
            ));
        }
        if row.attributes.is_empty() {
            return Err(Error::invalid(
                format!("rows[{r}].attributes"),
                "name at least one attribute to set",
            ));
        }
        check_attribute_names(
            config,
            row.attributes.keys(),
            &format!("rows[{r}].attributes"),
        )?;
    }
    config
        .attributes
        .iter()
        .map(|def| {
            let mut builder = AttrBuilder::new(def.ty);
            let mut set = Vec::with_capacity(rows.len());
            for (r, row) in rows.iter().enumerate() {
                let value = row.attributes.get(&def.name);
                set.push(value.is_some());
                builder.append(value, &format!("rows[{r}].attributes.{}", def.name))?;
            }
            Ok((builder.finish(), set))
        })
        .collect()
}

/// Builds Arrow columns row by row, checking each value.
struct BatchBuilder<'a> {
    config: &'a CollectionConfig,
    ids: Vec<Id>,
    seen: HashMap<Id, usize>,
    vectors: Vec<f32>,
    attributes: Vec<AttrBuilder>,
}

enum AttrBuilder {
    Bool(BooleanBuilder),
    I64(Int64Builder),
    F64(Float64Builder),
    Str(StringBuilder),
    StrList(ListBuilder<StringBuilder>),
}

impl AttrBuilder {
    fn new(ty: AttributeType) -> Self {
        match ty {
            AttributeType::Bool => AttrBuilder::Bool(BooleanBuilder::new()),
            AttributeType::I64 => AttrBuilder::I64(Int64Builder::new()),
            AttributeType::F64 => AttrBuilder::F64(Float64Builder::new()),
            AttributeType::String => AttrBuilder::Str(StringBuilder::new()),
            AttributeType::StringList => {
                AttrBuilder::StrList(ListBuilder::new(StringBuilder::new()))
            }
        }
    }

    fn append(&mut self, value: Option<&Value>, field: &str) -> Result<()> {
        let wrong = |want: &str| {
            Error::invalid(field, format!("expected {want}, got {}", json_kind(value)))
        };
        match (self, value) {
            (AttrBuilder::Bool(b), None | Some(Value::Null)) => b.append_null(),
            (AttrBuilder::I64(b), None | Some(Value::Null)) => b.append_null(),
            (AttrBuilder::F64(b), None | Some(Value::Null)) => b.append_null(),
            (AttrBuilder::Str(b), None | Some(Value::Null)) => b.append_null(),
            (AttrBuilder::StrList(b), None | Some(Value::Null)) => b.append_null(),
            (AttrBuilder::Bool(b), Some(Value::Bool(v))) => b.append_value(*v),
            (AttrBuilder::Bool(_), _) => return Err(wrong("a bool")),
            (AttrBuilder::I64(b), Some(Value::Number(n))) => b.append_value(
                n.as_i64()
                    .ok_or_else(|| wrong("an integer within the i64 range"))?,
            ),
            (AttrBuilder::I64(_), _) => return Err(wrong("an integer")),
            (AttrBuilder::F64(b), Some(Value::Number(n))) => b.append_value(
                n.as_f64()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| wrong("a finite number"))?,
            ),
            (AttrBuilder::F64(_), _) => return Err(wrong("a number")),
            (AttrBuilder::Str(b), Some(Value::String(s))) => b.append_value(s),
            (AttrBuilder::Str(_), _) => return Err(wrong("a string")),
            (AttrBuilder::StrList(b), Some(Value::Array(items))) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => b.values().append_value(s),
                        other => {
                            return Err(Error::invalid(
                                format!("{field}[{i}]"),
                                format!("expected a string, got {}", json_kind(Some(other))),
                            ));
                        }
                    }
                }
                b.append(true);
            }
            (AttrBuilder::StrList(_), _) => return Err(wrong("a list of strings")),
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        match self {
            AttrBuilder::Bool(mut b) => Arc::new(b.finish()),
            AttrBuilder::I64(mut b) => Arc::new(b.finish()),
            AttrBuilder::F64(mut b) => Arc::new(b.finish()),
            AttrBuilder::Str(mut b) => Arc::new(b.finish()),
            AttrBuilder::StrList(mut b) => Arc::new(b.finish()),
        }
    }
}

fn json_kind(value: Option<&Value>) -> &'static str {
    match value {
        None | Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a bool",
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => "an integer",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "a list",
        Some(Value::Object(_)) => "an object",
    }
}

impl<'a> BatchBuilder<'a> {
    fn new(config: &'a CollectionConfig, capacity: usize) -> Self {
        Self {
            config,
            ids: Vec::with_capacity(capacity),
            seen: HashMap::with_capacity(capacity),
            vectors: Vec::with_capacity(capacity * config.dimension as usize),
            attributes: config
                .attributes
                .iter()
                .map(|a| AttrBuilder::new(a.ty))
                .collect(),
        }
    }

    fn push_id(&mut self, id: &Id, field: &str) -> Result<()> {
        id.check(self.config.id_type, field)?;
        if let Some(first) = self.seen.insert(id.clone(), self.ids.len()) {
            return Err(Error::invalid(
                field,
                format!(
                    "duplicate id {id} in one request (first at index {first}); send each id once"
                ),
            ));
        }
        self.ids.push(id.clone());
        Ok(())
    }

    fn push_vector(&mut self, vector: &VectorIn, field: &str) -> Result<()> {
        let values = vector.decode(self.config.dimension as usize, field)?;
        self.vectors.extend_from_slice(&values);
        Ok(())
    }

    fn finish(self) -> Result<RecordBatch> {
        let schema = upsert_schema(self.config);
        let ids: ArrayRef = match self.config.id_type {
            IdType::U64 => Arc::new(UInt64Array::from_iter_values(self.ids.iter().map(
                |id| match id {
                    Id::U64(v) => *v,
                    Id::Str(_) => 0, // excluded by push_id's check
                },
            ))),
            IdType::String => {
                Arc::new(StringArray::from_iter_values(self.ids.iter().map(
                    |id| match id {
                        Id::Str(s) => s.as_str(),
                        Id::U64(_) => "",
                    },
                )))
            }
        };
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let vectors = FixedSizeListArray::try_new(
            item,
            self.config.dimension as i32,
            Arc::new(Float32Array::from(self.vectors)),
            None,
        )?;
        let mut columns: Vec<ArrayRef> = vec![ids, Arc::new(vectors)];
        columns.extend(self.attributes.into_iter().map(AttrBuilder::finish));
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

fn check_attribute_names<'k>(
    config: &CollectionConfig,
    names: impl Iterator<Item = &'k String>,
    field: &str,
) -> Result<()> {
    for name in names {
        if config.attribute(name).is_none() {
            let known: Vec<_> = config.attributes.iter().map(|a| a.name.as_str()).collect();
            return Err(Error::invalid(
                format!("{field}.{name}"),
                format!("unknown attribute; the collection has {known:?}"),
            ));
        }
    }
    Ok(())
}

/// Converts row-wise input to an upsert batch, or says which field is wrong.
pub fn rows_to_batch(config: &CollectionConfig, rows: &[RowIn]) -> Result<RecordBatch> {
    if rows.is_empty() {
        return Err(Error::invalid("rows", "must contain at least one row"));
    }
    let mut b = BatchBuilder::new(config, rows.len());
    for (r, row) in rows.iter().enumerate() {
        b.push_id(&row.id, &format!("rows[{r}].id"))?;
        b.push_vector(&row.vector, &format!("rows[{r}].vector"))?;
        check_attribute_names(
            config,
            row.attributes.keys(),
            &format!("rows[{r}].attributes"),
        )?;
        for (a, def) in config.attributes.iter().enumerate() {
            let field = format!("rows[{r}].attributes.{}", def.name);
            b.attributes[a].append(row.attributes.get(&def.name), &field)?;
        }
    }
    b.finish()
}

/// Converts columnar input to an upsert batch, or says which field is wrong.
pub fn columns_to_batch(config: &CollectionConfig, columns: &ColumnsIn) -> Result<RecordBatch> {
    let n = columns.ids.len();
    if n == 0 {
        return Err(Error::invalid(
            "columns.ids",
            "must contain at least one id",
        ));
    }
    let vectors = columns
        .vectors
        .decode(n, config.dimension as usize, "columns.vectors")?;
    check_attribute_names(config, columns.attributes.keys(), "columns.attributes")?;
    for (name, values) in &columns.attributes {
        if values.len() != n {
            return Err(Error::invalid(
                format!("columns.attributes.{name}"),
                format!("has {} values for {n} ids", values.len()),
            ));
        }
    }
    let mut b = BatchBuilder::new(config, n);
    for (i, id) in columns.ids.iter().enumerate() {
        b.push_id(id, &format!("columns.ids[{i}]"))?;
    }
    b.vectors = vectors;
    for (a, def) in config.attributes.iter().enumerate() {
        let values = columns.attributes.get(&def.name);
        for i in 0..n {
            let field = format!("columns.attributes.{}[{i}]", def.name);
            b.attributes[a].append(values.map(|v| &v[i]), &field)?;
        }
    }
    b.finish()
}

/// The columnar upsert body of rows `range` of an upsert batch (the
/// inverse of [`columns_to_batch`]), vectors packed as one base64 string.
pub fn batch_to_columns(batch: &RecordBatch, range: std::ops::Range<usize>) -> Result<ColumnsIn> {
    use arrow::array::AsArray;
    let ids = batch.column(0);
    let vectors = batch
        .column(1)
        .as_fixed_size_list_opt()
        .ok_or_else(|| Error::internal("batch_to_columns", "column 1 is not the vectors"))?;
    let dim = vectors.value_length() as usize;
    let values = vectors
        .values()
        .as_primitive_opt::<arrow::datatypes::Float32Type>()
        .ok_or_else(|| Error::internal("batch_to_columns", "vectors are not f32"))?;
    let flat = &values.values()[range.start * dim..range.end * dim];
    let schema = batch.schema();
    let attributes = (2..batch.num_columns())
        .map(|c| {
            let column = batch.column(c);
            let values = range
                .clone()
                .map(|r| value_at(column.as_ref(), r))
                .collect();
            (schema.field(c).name().clone(), values)
        })
        .collect();
    Ok(ColumnsIn {
        ids: range
            .clone()
            .map(|r| crate::id::id_at(ids.as_ref(), r))
            .collect(),
        vectors: VectorsIn::Packed(super::vectors::encode_base64(flat)),
        attributes,
        if_versions: None,
    })
}

/// Reads attribute `column[row]` as JSON.
pub fn value_at(column: &dyn arrow::array::Array, row: usize) -> Value {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};
    if column.is_null(row) {
        return Value::Null;
    }
    match column.data_type() {
        DataType::Boolean => Value::Bool(column.as_boolean().value(row)),
        DataType::Int64 => Value::from(column.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => Value::from(column.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::from(column.as_string::<i32>().value(row)),
        DataType::List(_) => {
            let list = column.as_list::<i32>().value(row);
            let strings = list.as_string::<i32>();
            Value::Array(
                (0..strings.len())
                    .map(|i| Value::from(strings.value(i)))
                    .collect(),
            )
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn config() -> CollectionConfig {
        CollectionConfig::for_tests(&[
            ("year", AttributeType::I64),
            ("tags", AttributeType::StringList),
        ])
    }

    fn rows(json: &str) -> Vec<RowIn> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn good_rows_convert() {
        let batch = rows_to_batch(&config(), &rows(r#"[{"id":1,"vector":[1,2],"attributes":{"year":2020,"tags":["a"]}},{"id":2,"vector":[3,4]}]"#)).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(value_at(batch.column(2).as_ref(), 0), Value::from(2020));
        assert_eq!(value_at(batch.column(3).as_ref(), 1), Value::Null);
    }

    #[test]
    fn bad_rows_name_the_field() {
        let cases = [
            (r#"[{"id":1,"vector":[1]}]"#, "rows[0].vector"),
            (r#"[{"id":1,"vector":[1,1e300]}]"#, "rows[0].vector[1]"),
            (r#"[{"id":"a","vector":[1,2]}]"#, "rows[0].id"),
            (
                r#"[{"id":1,"vector":[1,2]},{"id":1,"vector":[1,2]}]"#,
                "rows[1].id",
            ),
            (
                r#"[{"id":1,"vector":[1,2],"attributes":{"nope":1}}]"#,
                "rows[0].attributes.nope",
            ),
            (
                r#"[{"id":1,"vector":[1,2],"attributes":{"year":"x"}}]"#,
                "rows[0].attributes.year",
            ),
            (
                r#"[{"id":1,"vector":[1,2],"attributes":{"year":1.5}}]"#,
                "rows[0].attributes.year",
            ),
            (
                r#"[{"id":1,"vector":[1,2],"attributes":{"tags":["a",3]}}]"#,
                "rows[0].attributes.tags[1]",
            ),
            ("[]", "rows"),
        ];
        for (json, field) in cases {
            let err = rows_to_batch(&config(), &rows(json)).unwrap_err();
            assert!(
                matches!(&err, Error::Invalid { field: f, .. } if f == field),
                "{json}: {err}"
            );
        }
    }

    #[test]
    fn batches_convert_back_to_columns() {
        let columns: ColumnsIn = serde_json::from_str(
            r#"{"ids":[1,2,3],"vectors":[[1,2],[3,4],[5,6]],"attributes":{"year":[1,null,3],"tags":[["a"],null,[]]}}"#,
        )
        .unwrap();
        let batch = columns_to_batch(&config(), &columns).unwrap();
        let back = batch_to_columns(&batch, 1..3).unwrap();
        let again = columns_to_batch(&config(), &back).unwrap();
        assert_eq!(again, batch.slice(1, 2));
    }

    #[test]
    fn columns_convert_and_check_lengths() {
        let ok: ColumnsIn = serde_json::from_str(
            r#"{"ids":[1,2],"vectors":[[1,2],[3,4]],"attributes":{"year":[1,null]}}"#,
        )
        .unwrap();
        assert_eq!(columns_to_batch(&config(), &ok).unwrap().num_rows(), 2);
        let bad: ColumnsIn = serde_json::from_str(
            r#"{"ids":[1,2],"vectors":[[1,2],[3,4]],"attributes":{"year":[1]}}"#,
        )
        .unwrap();
        let err = columns_to_batch(&config(), &bad).unwrap_err();
        assert!(err.to_string().contains("columns.attributes.year"), "{err}");
    }
}
