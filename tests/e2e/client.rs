//! The typed client (`cascade-client`) against a real origin: lists, events counted once when a
//! batch is sent again, a purchase filtered from the next list, and the origin's errors typed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use cascade_client::{Error, Event, EventKind, ListContext, Source, with_idempotency_keys};
use cascade_e2e::{Origin, bundle_dir};

const API_KEY: &str = "client-internal-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reads_lists_sends_events_once_and_types_errors() {
    let bundle = bundle_dir().unwrap();
    let origin =
        Origin::start(&[("CASCADE_BUNDLE", bundle.display().to_string()), ("CASCADE_API_KEYS", API_KEY.to_string())])
            .await
            .unwrap();
    let client = origin.client(API_KEY);

    let segment = client.segment_recs("home.mobile.us", Some(7)).await.unwrap();
    assert_eq!((segment.items.len(), segment.segment.as_str()), (7, "home.mobile.us"));
    let context = ListContext { n: Some(5), page: Some("detail".into()), ..ListContext::default() };
    let list = client.user_recs("u3", &context).await.unwrap();
    assert_eq!((list.source, list.items.len(), list.user_id.as_deref()), (Source::Realtime, 5, Some("u3")));
    assert!(list.segment.starts_with("detail."), "{}", list.segment);

    // A batch sent twice (as a retry would) counts once; the purchase leaves the next list.
    let bought = list.items[0].id.clone();
    let mut events: Vec<Event> =
        list.items[1..].iter().map(|item| Event::new("u3", EventKind::View, Some(&item.id))).collect();
    events.push(Event::new("u3", EventKind::Purchase, Some(&bought)));
    let events = with_idempotency_keys(events);
    let first = client.send_events(events.clone()).await.unwrap();
    assert_eq!((first.accepted, first.duplicates), (5, 0));
    let again = client.send_events(events).await.unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 5), "the same keys: nothing applied twice");
    let after = client.user_recs("u3", &context).await.unwrap();
    assert!(after.items.iter().all(|item| item.id != bought), "{bought} was bought");

    // The origin's refusals, typed.
    let stranger = origin.client("not-the-key-0123456789");
    let refused = stranger.segment_recs("home.mobile.us", None).await.unwrap_err();
    assert!(matches!(&refused, Error::Api { status: 401, code, .. } if code == "unauthorized"), "{refused}");
    assert_eq!(client.readiness().await.unwrap()["ready"], true);
}
