//! The Arrow schema of a collection's rows.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::catalog::{AttributeType, CollectionConfig, IdType};
use crate::error::{Error, Result};

/// The id column.
pub const COL_ID: &str = "id";
/// The vector column (a fixed-size list of f32).
pub const COL_VECTOR: &str = "vector";
/// The LSN of the write that wrote the row.
pub const COL_LSN: &str = "_lsn";

/// The data-file schema of an indexed segment: every column but the
/// vector, which its index file holds (one copy of each vector), and the
/// indices of those columns in the segment schema.
pub fn indexed_data_schema(schema: &SchemaRef) -> (SchemaRef, Vec<usize>) {
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|i| schema.field(*i).name() != COL_VECTOR)
        .collect();
    let fields: Vec<Field> = keep.iter().map(|i| schema.field(*i).clone()).collect();
    (Arc::new(Schema::new(fields)), keep)
}

/// `id`, `vector`, `_lsn` (all required), then one nullable column per
/// attribute, in the configuration's order.
pub fn segment_schema(config: &CollectionConfig) -> SchemaRef {
    let id_type = match config.id_type {
        IdType::U64 => DataType::UInt64,
        IdType::String => DataType::Utf8,
    };
    let vector_type = DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float32, false)),
        config.dimension as i32,
    );
    let mut fields = vec![
        Field::new(COL_ID, id_type, false),
        Field::new(COL_VECTOR, vector_type, false),
        Field::new(COL_LSN, DataType::UInt64, false),
    ];
    for attr in &config.attributes {
        fields.push(Field::new(&attr.name, attribute_data_type(attr.ty), true));
    }
    Arc::new(Schema::new(fields))
}

/// The Arrow type an attribute is stored as.
pub(crate) fn attribute_data_type(ty: AttributeType) -> DataType {
    match ty {
        AttributeType::Bool => DataType::Boolean,
        AttributeType::I64 => DataType::Int64,
        AttributeType::F64 => DataType::Float64,
        AttributeType::String => DataType::Utf8,
        AttributeType::StringList => {
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        }
    }
}

/// The schema of upserted rows in the log: the segment schema without `_lsn`.
pub fn upsert_schema(config: &CollectionConfig) -> SchemaRef {
    let full = segment_schema(config);
    let fields: Vec<_> = full
        .fields()
        .iter()
        .filter(|f| f.name() != COL_LSN)
        .cloned()
        .collect();
    Arc::new(Schema::new(fields))
}

/// The schema of a delete file (and of deletes in the log tail): the id
/// column and `_lsn`.
pub fn delete_schema(config: &CollectionConfig) -> SchemaRef {
    let full = segment_schema(config);
    Arc::new(Schema::new(vec![
        full.field(0).clone(),
        Field::new(COL_LSN, DataType::UInt64, false),
    ]))
}

/// Adds the `_lsn` column (every row at `lsn`) to upserted rows or deleted
/// ids from the log; it sits where the segment schema has it (third, after
/// id and vector; second in a delete batch).
pub fn with_lsn(batch: &RecordBatch, lsn: u64) -> Result<RecordBatch> {
    let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let at = if batch.column_by_name(COL_VECTOR).is_some() {
        2
    } else {
        1
    };
    fields.insert(at, Arc::new(Field::new(COL_LSN, DataType::UInt64, false)));
    columns.insert(at, Arc::new(UInt64Array::from_value(lsn, batch.num_rows())));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Rows read from a segment file or a log record, in `schema` (the
/// segment schema or a projection of it): a bulk import's file has no
/// `_lsn` column (every row is at `rows_lsn`, from the manifest), and rows
/// written before an attribute was added lack its column (all null). A
/// column `schema` does not have means the rows were written after an
/// attribute was added that this process does not know yet:
/// `Error::SchemaChanged`, so that it learns it rather than drop values.
pub fn conform(
    batch: RecordBatch,
    schema: &SchemaRef,
    rows_lsn: Option<u64>,
) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    if batch
        .schema()
        .fields()
        .iter()
        .any(|f| schema.field_with_name(f.name()).is_err())
    {
        return Err(Error::SchemaChanged);
    }
    let n = batch.num_rows();
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => Ok(Arc::clone(column)),
            None if field.name() == COL_LSN => rows_lsn
                .map(|lsn| Arc::new(UInt64Array::from_value(lsn, n)) as ArrayRef)
                .ok_or_else(|| Error::corrupt("segment", "no _lsn column and no rows_lsn")),
            None if field.is_nullable() => Ok(arrow::array::new_null_array(field.data_type(), n)),
            None => Err(Error::corrupt(
                "segment",
                format!("no column {:?}", field.name()),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(n));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &options,
    )?)
}

/// Checks that `batch` has exactly the collection's columns and types.
pub fn check_batch(schema: &Schema, batch: &RecordBatch) -> Result<()> {
    let got = batch.schema();
    if got.fields().len() != schema.fields().len() {
        return Err(Error::invalid(
            "batch",
            format!(
                "has {} columns, the collection has {}",
                got.fields().len(),
                schema.fields().len()
            ),
        ));
    }
    for (want, have) in schema.fields().iter().zip(got.fields()) {
        if want.name() != have.name() || !want.data_type().equals_datatype(have.data_type()) {
            return Err(Error::invalid(
                want.name(),
                format!(
                    "expected column {:?} of type {}, got {:?} of type {}",
                    want.name(),
                    want.data_type(),
                    have.name(),
                    have.data_type()
                ),
            ));
        }
        if !want.is_nullable()
            && batch
                .column_by_name(want.name())
                .is_some_and(|c| c.null_count() > 0)
        {
            return Err(Error::invalid(want.name(), "must not contain nulls"));
        }
    }
    Ok(())
}
