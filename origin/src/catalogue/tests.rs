//! Unit tests of the catalogue's state and persistence.

use super::*;

fn change(json: &str) -> ItemChange {
    serde_json::from_str(json).unwrap()
}

#[tokio::test]
async fn hidden_expired_and_deleted_items_are_withheld_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = CatalogueConfig { file: Some(dir.path().join("catalogue.json")), ..Default::default() };
    let catalogue = Catalogue::open(&config).unwrap();
    assert!(catalogue.is_empty());
    catalogue.change("a", &change(r#"{"hidden": true}"#)).await.unwrap();
    catalogue.change("b", &change(r#"{"expires_at_ms": 1000}"#)).await.unwrap();
    catalogue.delete("c").await.unwrap();
    assert_eq!(catalogue.withheld("a", 0), Some("hidden"));
    assert_eq!((catalogue.withheld("b", 999), catalogue.withheld("b", 1000)), (None, Some("expired")));
    assert_eq!(catalogue.withheld("c", 0), Some("deleted"));
    assert_eq!(catalogue.withheld("d", 0), None);

    let reopened = Catalogue::open(&config).unwrap();
    assert_eq!(reopened.withheld("a", 0), Some("hidden"));
    assert_eq!(reopened.withheld("c", 0), Some("deleted"));
    // Unhide; clear an expiry with null; a deleted item cannot come back.
    reopened.change("a", &change(r#"{"hidden": false}"#)).await.unwrap();
    reopened.change("b", &change(r#"{"expires_at_ms": null}"#)).await.unwrap();
    assert_eq!((reopened.withheld("a", 0), reopened.withheld("b", 5000)), (None, None));
    assert!(matches!(reopened.change("c", &change(r#"{"hidden": false}"#)).await, Err(CatalogueError::Deleted(_))));
    // Items back to the default state leave the file.
    let stored: HashMap<String, ItemState> =
        serde_json::from_slice(&std::fs::read(dir.path().join("catalogue.json")).unwrap()).unwrap();
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["c"]);
}

#[tokio::test]
async fn new_items_are_searchable_at_once_bounded_in_number_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        CatalogueConfig { file: Some(dir.path().join("catalogue.json")), max_new_items: 2, ..Default::default() };
    let catalogue = Catalogue::open(&config).unwrap();
    let new = |x: f32| NewItem { bundle_id: "b".into(), embedding: vec![x, 0.0], title: None, categories: vec![] };
    let add = |id: &str, x: f32| (id.to_string(), ItemChange::default(), Some(new(x)));
    catalogue.apply(vec![add("n1", 1.0), add("n2", 2.0)]).await.unwrap();
    let top = |c: &Catalogue| c.fresh().top("b", &[1.0, 0.0], 5, 0).into_iter().map(|f| f.id).collect::<Vec<_>>();
    assert_eq!(top(&catalogue), ["n2", "n1"]);
    // A third is refused, and the whole batch with it; replacing an embedding is not an addition.
    assert!(matches!(catalogue.apply(vec![add("n1", 3.0), add("n3", 9.0)]).await, Err(CatalogueError::Full(2))));
    assert_eq!(top(&catalogue), ["n2", "n1"], "nothing of a refused batch is applied");
    catalogue.apply(vec![add("n1", 3.0)]).await.unwrap();
    assert_eq!(top(&Catalogue::open(&config).unwrap()), ["n1", "n2"], "read back at start");
    // Hidden: not retrieved; deleted: its embedding is dropped and the slot freed.
    catalogue.change("n1", &change(r#"{"hidden": true}"#)).await.unwrap();
    assert_eq!(top(&catalogue), ["n2"]);
    catalogue.delete("n2").await.unwrap();
    assert!(catalogue.new_item("n2").is_none() && catalogue.withheld("n2", 0) == Some("deleted"));
    catalogue.apply(vec![add("n3", 1.0)]).await.unwrap();
    assert_eq!(top(&catalogue), ["n3"]);
}

#[test]
fn unknown_fields_in_a_change_are_refused() {
    assert!(serde_json::from_str::<ItemChange>(r#"{"hiden": true}"#).is_err());
    assert!(serde_json::from_str::<ItemChange>(r#"{"hidden": "yes"}"#).is_err());
    let none = change("{}");
    assert!(none.hidden.is_none() && none.expires_at_ms.is_none());
}
