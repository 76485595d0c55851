//! Segment files written to and read back from every store, with projection
//! and row selection done by ranged reads (counted), not whole downloads.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int64Array,
    ListBuilder, RecordBatch, StringArray, StringBuilder, UInt64Array,
};
use arrow::datatypes::{DataType, Field};
use floe_core::catalog::{
    AttributeDef, AttributeType, CollectionConfig, IdType, IndexParams, Metric,
};
use floe_core::segment::{
    ParquetFile, RangeSource, SegmentWriteOptions, StoreSource, segment_schema, write_segment,
};
use floe_core::storage::{CollectionPaths, CountingStore};
use floe_core::{Error, ErrorKind};
use floe_tests::TestStore;
use object_store::ObjectStoreExt;

fn config(dimension: u32) -> CollectionConfig {
    let attr = |name: &str, ty| AttributeDef {
        name: name.into(),
        ty,
    };
    CollectionConfig {
        name: "seg".into(),
        dimension,
        metric: Metric::Cosine,
        id_type: IdType::U64,
        attributes: vec![
            attr("published", AttributeType::Bool),
            attr("year", AttributeType::I64),
            attr("score", AttributeType::F64),
            attr("title", AttributeType::String),
            attr("tags", AttributeType::StringList),
        ],
        index: IndexParams::default(),
    }
}

/// Rows `start..start+n` with values derived from the row number; every
/// seventh row has null attributes.
fn batch(config: &CollectionConfig, start: u64, n: usize) -> RecordBatch {
    let dim = config.dimension as usize;
    let ids: Vec<u64> = (start..start + n as u64).collect();
    let values: Vec<f32> = ids
        .iter()
        .flat_map(|id| (0..dim).map(move |d| (*id as f32) + d as f32 / 1000.0))
        .collect();
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let vectors =
        FixedSizeListArray::try_new(item, dim as i32, Arc::new(Float32Array::from(values)), None)
            .unwrap();
    let null = |id: &u64| id.is_multiple_of(7);
    let mut tags = ListBuilder::new(StringBuilder::new());
    for id in &ids {
        if null(id) {
            tags.append_null();
        } else {
            tags.values().append_value(format!("t{}", id % 3));
            tags.values().append_value("all");
            tags.append(true);
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(ids.clone())),
        Arc::new(vectors),
        Arc::new(UInt64Array::from(
            ids.iter().map(|id| id + 100).collect::<Vec<_>>(),
        )),
        Arc::new(BooleanArray::from(
            ids.iter()
                .map(|id| (!null(id)).then_some(id % 2 == 0))
                .collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            ids.iter()
                .map(|id| (!null(id)).then_some(1990 + (*id % 30) as i64))
                .collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            ids.iter()
                .map(|id| (!null(id)).then_some(*id as f64 / 3.0))
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            ids.iter()
                .map(|id| (!null(id)).then(|| format!("title {id}")))
                .collect::<Vec<_>>(),
        )),
        Arc::new(tags.finish()),
    ];
    RecordBatch::try_new(segment_schema(config), columns).unwrap()
}

#[tokio::test]
async fn segments_round_trip_on_every_store() {
    let config = config(16);
    let schema = segment_schema(&config);
    let batches = vec![batch(&config, 0, 1000), batch(&config, 1000, 500)];
    let options = SegmentWriteOptions {
        row_group_rows: 256,
    };
    for t in TestStore::all() {
        let path = CollectionPaths::new("seg", "i").segment_data("s1");
        let (file, _) = write_segment(t.store.as_ref(), &path, &schema, &batches, &options)
            .await
            .unwrap();
        assert_eq!(
            (file.rows, file.min_lsn, file.max_lsn),
            (1500, 100, 1599),
            "{}",
            t.name
        );
        // Immutable: a second write to the same path is refused.
        let err = write_segment(t.store.as_ref(), &path, &schema, &batches, &options)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{}: {err}", t.name);

        let source: Arc<dyn RangeSource> = Arc::new(StoreSource(Arc::clone(&t.store)));
        let reader = ParquetFile::open(&source, path.clone(), file.size_bytes, 0)
            .await
            .unwrap();
        assert_eq!(reader.num_rows(), 1500);
        assert_eq!(reader.num_row_groups(), 6, "{}", t.name);
        assert_eq!(reader.schema(), &schema, "{}", t.name);
        let all = reader.read(&source, None, None).await.unwrap();
        let want = arrow::compute::concat_batches(&schema, &batches).unwrap();
        assert_eq!(
            all, want,
            "{}: every type and null survives the round trip",
            t.name
        );

        let some = reader
            .read(&source, Some(&["id", "tags"]), Some(&[10..12, 1400..1401]))
            .await
            .unwrap();
        assert_eq!(some.num_columns(), 2);
        let ids = some
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap();
        assert_eq!(ids.values().to_vec(), vec![10, 11, 1400], "{}", t.name);
        assert!(some.column(1).is_null(2), "row 1400 has null tags");
        // Columns named out of the file's order come in the file's order.
        let reversed = reader
            .read(&source, Some(&["tags", "id"]), Some(&[10..12, 1400..1401]))
            .await
            .unwrap();
        assert_eq!(reversed, some, "{}", t.name);

        // Row group 5 (of 256 rows each) by its rows.
        let groups = reader
            .read(
                &source,
                Some(&["year"]),
                Some(std::slice::from_ref(&(5 * 256..1500))),
            )
            .await
            .unwrap();
        assert_eq!(groups.num_rows(), 1500 - 5 * 256);

        let err = reader
            .read(&source, Some(&["nope"]), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let missing = ParquetFile::open(
            &source,
            CollectionPaths::new("seg", "i").segment_data("none"),
            file.size_bytes,
            0,
        )
        .await;
        assert!(
            matches!(missing, Err(ref e) if e.kind() == ErrorKind::NotFound),
            "{}: {missing:?}",
            t.name
        );
    }
}

#[tokio::test]
async fn projected_and_selective_reads_fetch_a_fraction_of_the_file() {
    let config = config(128);
    let schema = segment_schema(&config);
    let batches: Vec<_> = (0..4).map(|i| batch(&config, i * 5000, 5000)).collect();
    for t in [TestStore::local(), TestStore::s3()] {
        let counting = Arc::new(CountingStore::new(Arc::clone(&t.store)));
        let path = CollectionPaths::new("seg", "i").segment_data("big");
        let options = SegmentWriteOptions {
            row_group_rows: 2048,
        };
        let (file, _) = write_segment(counting.as_ref(), &path, &schema, &batches, &options)
            .await
            .unwrap();
        assert!(file.size_bytes > 10_000_000, "{} bytes", file.size_bytes);

        let before = counting.stats();
        let source: Arc<dyn RangeSource> = Arc::new(StoreSource(counting.clone()));
        let reader = ParquetFile::open(&source, path.clone(), file.size_bytes, file.footer_bytes)
            .await
            .unwrap();
        let opened = counting.stats().since(&before);
        assert_eq!(
            opened.gets, 1,
            "{}: footer and page index in one ranged GET: {opened:?}",
            t.name
        );

        let before = counting.stats();
        let ids = reader.read(&source, Some(&["id"]), None).await.unwrap();
        assert_eq!(ids.num_rows(), 20_000);
        let used = counting.stats().since(&before);
        assert!(
            used.bytes_read * 20 < file.size_bytes,
            "{}: id column read {used:?} of {}",
            t.name,
            file.size_bytes
        );

        let before = counting.stats();
        let rows = reader
            .read(
                &source,
                Some(&["vector"]),
                Some(std::slice::from_ref(&(12_345..12_355))),
            )
            .await
            .unwrap();
        assert_eq!(rows.num_rows(), 10);
        let used = counting.stats().since(&before);
        assert!(
            used.bytes_read * 8 < file.size_bytes,
            "{}: 10 vectors cost {used:?}",
            t.name
        );
    }
}

#[tokio::test]
async fn batches_of_the_wrong_shape_are_rejected_and_nothing_is_written() {
    let t = TestStore::memory();
    let config = config(16);
    let other = self::config(8);
    let path = CollectionPaths::new("seg", "i").segment_data("bad");
    let wrong_dim = vec![batch(&other, 0, 10)];
    let err = write_segment(
        t.store.as_ref(),
        &path,
        &segment_schema(&config),
        &wrong_dim,
        &Default::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::Invalid { ref field, .. } if field == "vector"),
        "{err}"
    );
    let err = write_segment(
        t.store.as_ref(),
        &path,
        &segment_schema(&config),
        &[],
        &Default::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(t.store.head(&path).await.is_err(), "nothing was written");
}

#[tokio::test]
async fn rows_read_page_by_page_through_the_decoded_cache_match_a_plain_read() {
    use floe_core::cache::{BlockCache, CacheSettings, ReadStats};
    let config = config(8);
    let schema = segment_schema(&config);
    let batches: Vec<_> = (0..4).map(|i| batch(&config, i * 5000, 5000)).collect();
    let t = TestStore::s3();
    let counting = Arc::new(CountingStore::new(Arc::clone(&t.store)));
    let path = CollectionPaths::new("seg", "pages").segment_data("rows");
    let options = SegmentWriteOptions {
        row_group_rows: 2048,
    };
    let (file, _) = write_segment(counting.as_ref(), &path, &schema, &batches, &options)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(
        BlockCache::open(
            counting.clone(),
            &CacheSettings {
                disk_mb: 0,
                ..Default::default()
            },
            dir.path().to_path_buf(),
        )
        .await
        .unwrap(),
    );
    let plain: Arc<dyn RangeSource> = Arc::new(StoreSource(counting.clone()));
    let cached = cache.source(&Arc::new(ReadStats::default()));
    let reader = ParquetFile::open(&plain, path.clone(), file.size_bytes, file.footer_bytes)
        .await
        .unwrap();
    let columns = ["id", "published", "year", "score", "title", "tags"];
    // Rows on page and row-group boundaries, nulls (every seventh) among them.
    let rows: Vec<u32> = vec![0, 6, 7, 2047, 2048, 2049, 9_001, 14_000, 19_999];
    let want = reader
        .read(
            &plain,
            Some(&columns),
            Some(&floe_core::segment::row_ranges(&rows)),
        )
        .await
        .unwrap();
    let got = reader.read_rows(&cached, &columns, &rows).await.unwrap();
    assert_eq!(got, want);
    assert!(
        cache.footprint().decoded_bytes > 0,
        "{:?}",
        cache.footprint()
    );
    // Again, and other rows of the same pages: from the decoded pages, no request.
    let near: Vec<u32> = vec![1, 2046, 2050, 19_998];
    let want_near = reader
        .read(
            &plain,
            Some(&columns),
            Some(&floe_core::segment::row_ranges(&near)),
        )
        .await
        .unwrap();
    let before = counting.stats();
    assert_eq!(
        reader.read_rows(&cached, &columns, &rows).await.unwrap(),
        want
    );
    assert_eq!(
        reader.read_rows(&cached, &columns, &near).await.unwrap(),
        want_near
    );
    assert_eq!(counting.stats().since(&before).gets, 0);
    // Unsorted and repeated rows read as sorted and distinct; no rows, none.
    let shuffled: Vec<u32> = vec![19_999, 7, 7, 0];
    let want = reader
        .read(
            &plain,
            Some(&columns),
            Some(&floe_core::segment::row_ranges(&shuffled)),
        )
        .await
        .unwrap();
    assert_eq!(
        reader
            .read_rows(&cached, &columns, &shuffled)
            .await
            .unwrap(),
        want
    );
    let none = reader.read_rows(&cached, &columns, &[]).await.unwrap();
    assert_eq!((none.num_rows(), none.num_columns()), (0, columns.len()));
    // A row past the end is an error, not a panic.
    assert!(
        reader
            .read_rows(&cached, &["year"], &[20_000])
            .await
            .is_err()
    );
}
