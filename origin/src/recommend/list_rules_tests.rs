//! Unit tests of the rules stage.

use super::*;

fn items(ids: &[&str]) -> Vec<RecItem> {
    ids.iter().map(|id| RecItem { id: id.to_string(), score: 0.0, title: None, position: 0 }).collect()
}

fn ids(items: &[RecItem]) -> Vec<&str> {
    items.iter().map(|i| i.id.as_str()).collect()
}

#[test]
fn purchased_blocked_and_recently_shown_items_are_dropped_before_the_cut() {
    let config = RulesConfig { seen_window: 3, seen_users: 10, block: vec!["b".into()], ..Default::default() };
    let rules = ListRules::new(&config, None);
    let all = items(&["a", "b", "c", "d", "e", "f", "g"]);
    let bought = HashSet::from(["c".to_string()]);
    let none = HashMap::new();
    let first = rules.finish(&all, Some("u"), &bought, ItemFacts::categories(&none), "home.desktop.us", 2);
    assert_eq!(ids(&first), ["a", "d"]);
    rules.remember("u", &first);
    assert_eq!(
        ids(&rules.finish(&all, Some("u"), &bought, ItemFacts::categories(&none), "home.desktop.us", 2)),
        ["e", "f"]
    );
    rules.remember("u", &items(&["e", "f"]));
    // The window holds the last 3 impressions: f, e, d; a is back.
    assert_eq!(
        ids(&rules.finish(&all, Some("u"), &bought, ItemFacts::categories(&none), "home.desktop.us", 3)),
        ["a", "g"]
    );
    // Another user, and anonymous lists, are not affected.
    assert_eq!(
        ids(&rules.finish(&all, Some("v"), &HashSet::new(), ItemFacts::categories(&none), "home.desktop.us", 2)),
        ["a", "c"]
    );
    assert_eq!(
        ids(&rules.finish(&all, None, &HashSet::new(), ItemFacts::categories(&none), "home.desktop.us", 2)),
        ["a", "c"]
    );
}

#[test]
fn at_most_k_items_per_category_each_item_counting_for_all_of_its_categories() {
    let rules = ListRules::new(&RulesConfig { max_per_category: 1, ..Default::default() }, None);
    let categories: HashMap<String, Vec<String>> = [
        ("a", vec!["drama"]),
        ("b", vec!["drama"]),
        ("c", vec!["comedy", "drama"]),
        ("d", vec!["comedy"]),
        ("e", vec![]),
        ("f", vec!["action"]),
    ]
    .into_iter()
    .map(|(id, cats)| (id.to_string(), cats.into_iter().map(String::from).collect()))
    .collect();
    let out = rules.finish(
        &items(&["a", "b", "c", "d", "e", "f"]),
        None,
        &HashSet::new(),
        ItemFacts::categories(&categories),
        "home.desktop.us",
        10,
    );
    assert_eq!(ids(&out), ["a", "d", "e", "f"]);
}

#[test]
fn pinned_items_take_their_place_in_matching_segments_unless_barred() {
    let pin = |segment: &str, item: &str, position: usize| Pin { segment: segment.into(), item: item.into(), position };
    let config = RulesConfig {
        block: vec!["x".into()],
        pin: vec![pin("home", "e", 1), pin("home.desktop", "z", 3), pin("*", "x", 2), pin("search", "b", 1)],
        ..Default::default()
    };
    let rules = ListRules::new(&config, None);
    let all = items(&["a", "b", "c", "d", "e"]);
    let none = HashMap::new();
    // e moves up to 1; z (not in the list) is placed at 3; x is blocked; the search pin does not match.
    let home = rules.finish(&all, Some("u"), &HashSet::new(), ItemFacts::categories(&none), "home.desktop.us", 4);
    assert_eq!(ids(&home), ["e", "a", "z", "b"]);
    assert_eq!(
        ids(&rules.finish(&all, None, &HashSet::new(), ItemFacts::categories(&none), "browse.mobile.us", 3)),
        ["a", "b", "c"]
    );
    // A purchased pinned item is not placed.
    let bought = HashSet::from(["e".to_string()]);
    assert_eq!(
        ids(&rules.finish(&all, Some("u"), &bought, ItemFacts::categories(&none), "home.mobile.us", 3)),
        ["a", "b", "c"]
    );
}

#[test]
fn removals_are_counted_by_rule() {
    let counter = IntCounterVec::new(prometheus::Opts::new("t", "t"), &["rule"]).unwrap();
    let config = RulesConfig { block: vec!["b".into()], ..Default::default() };
    let rules = ListRules::new(&config, Some(counter.clone()));
    rules.finish(
        &items(&["a", "b", "c"]),
        Some("u"),
        &HashSet::from(["c".into()]),
        ItemFacts::categories(&HashMap::new()),
        "home.desktop.us",
        3,
    );
    assert_eq!(counter.with_label_values(&["blocked"]).get(), 1);
    assert_eq!(counter.with_label_values(&["purchased"]).get(), 1);
}

#[test]
fn the_diversity_rerank_reorders_near_duplicates_and_a_reload_turns_it_on_and_off() {
    let file = cascade_shared::embedding::encode_file("b", 2, &["a", "b", "c"], &[1.0, 0.0, 0.99, 0.1, 0.0, 1.0]);
    let table = cascade_shared::embedding::decode_file(&file).unwrap();
    let index: HashMap<String, usize> = table.ids.iter().enumerate().map(|(row, id)| (id.clone(), row)).collect();
    let none = HashMap::new();
    let facts = ItemFacts { categories: &none, embeddings: Some((&table, &index)) };
    let mut all = items(&["a", "b", "c"]);
    for (item, score) in all.iter_mut().zip([1.0, 0.9, 0.8]) {
        item.score = score;
    }
    let counter = IntCounterVec::new(prometheus::Opts::new("t", "t"), &["rule"]).unwrap();
    let rules = ListRules::new(&RulesConfig::default(), Some(counter.clone()));
    assert_eq!(ids(&rules.finish(&all, None, &HashSet::new(), facts, "home.desktop.us", 3)), ["a", "b", "c"]);
    rules.reload(&RulesConfig { diversity: 0.5, block: vec!["x".into()], ..Default::default() });
    assert_eq!(ids(&rules.finish(&all, None, &HashSet::new(), facts, "home.desktop.us", 3)), ["a", "c", "b"]);
    assert_eq!(counter.with_label_values(&["diversity"]).get(), 1, "c moved up");
    assert_eq!(rules.config().block, ["x"]);
    rules.reload(&RulesConfig::default());
    assert_eq!(ids(&rules.finish(&all, None, &HashSet::new(), facts, "home.desktop.us", 3)), ["a", "b", "c"]);
}
