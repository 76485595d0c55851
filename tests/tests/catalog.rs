//! Catalog entries in the object store: put-if-absent creation, removal, listing.

use std::sync::Arc;

use floe_core::catalog::{
    AttributeDef, AttributeType, Catalog, CatalogEntry, CollectionConfig, IdType, IndexParams,
    Metric,
};
use floe_core::{Error, ErrorKind};
use floe_tests::TestStore;

fn entry(name: &str, dimension: u32) -> CatalogEntry {
    CatalogEntry::mint(config(name, dimension))
}

fn config(name: &str, dimension: u32) -> CollectionConfig {
    CollectionConfig {
        name: name.into(),
        dimension,
        metric: Metric::L2,
        id_type: IdType::String,
        attributes: vec![
            AttributeDef {
                name: "year".into(),
                ty: AttributeType::I64,
            },
            AttributeDef {
                name: "tags".into(),
                ty: AttributeType::StringList,
            },
        ],
        index: IndexParams::default(),
    }
}

#[tokio::test]
async fn create_get_list_and_conflicts() {
    for t in TestStore::all() {
        let catalog = Catalog::new(Arc::clone(&t.store));
        assert_eq!(
            catalog.list().await.unwrap(),
            Vec::<String>::new(),
            "{}",
            t.name
        );
        let err = catalog.get("docs").await.unwrap_err();
        assert!(
            matches!(err, Error::CollectionNotFound(_)),
            "{}: {err}",
            t.name
        );
        let first = entry("docs", 8);
        assert_eq!(catalog.create(&first).await.unwrap(), (first.clone(), true));
        // An identical create is a successful retry that keeps the first
        // incarnation; a different one is a conflict.
        let (kept, created) = catalog.create(&entry("docs", 8)).await.unwrap();
        assert_eq!((&kept, created), (&first, false), "{}", t.name);
        let err = catalog.create(&entry("docs", 16)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{}: {err}", t.name);
        catalog.create(&entry("images", 4)).await.unwrap();
        assert_eq!(catalog.get("docs").await.unwrap(), first, "{}", t.name);
        assert_eq!(
            catalog.list().await.unwrap(),
            vec!["docs", "images"],
            "{}",
            t.name
        );
        // Invalid input writes nothing.
        let err = catalog.create(&entry("../escape", 8)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest, "{}", t.name);
        let err = catalog.create(&entry("zero", 0)).await.unwrap_err();
        assert!(err.to_string().contains("dimension"), "{}: {err}", t.name);
        assert_eq!(catalog.list().await.unwrap().len(), 2, "{}", t.name);
        // A removed entry is gone from both the listing and a lookup.
        catalog.remove("docs").await.unwrap();
        assert_eq!(catalog.list().await.unwrap(), vec!["images"], "{}", t.name);
        assert!(matches!(
            catalog.get("docs").await,
            Err(Error::CollectionNotFound(_))
        ));
    }
}

#[tokio::test]
async fn racing_creates_with_different_configs_have_one_winner() {
    for t in TestStore::all() {
        let catalog = Catalog::new(Arc::clone(&t.store));
        let tasks: Vec<_> = (1..=8)
            .map(|dim| {
                let catalog = catalog.clone();
                tokio::spawn(async move { catalog.create(&entry("raced", dim)).await })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok((c, created)) => {
                    assert!(created, "{}", t.name);
                    winners.push(c.config.dimension);
                }
                Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{}: {e}", t.name),
            }
        }
        assert_eq!(winners.len(), 1, "{}: {winners:?}", t.name);
        assert_eq!(
            catalog.get("raced").await.unwrap().config.dimension,
            winners[0],
            "{}",
            t.name
        );
    }
}
