//! The in-memory store's fault injection, which the simulation uses for store outages.

use contiv_store::{MemoryStore, Store, StoreError};

#[tokio::test]
async fn an_outage_fails_calls_and_ends_watches_then_heals() {
    let s = MemoryStore::new();
    let rev = s.put("/k", b"1".to_vec()).await.unwrap();
    let mut w = s.watch("/", 0).await.unwrap();
    s.set_available(false);
    assert!(matches!(s.get("/k").await, Err(StoreError::Unavailable(_))));
    assert!(matches!(
        w.next().await,
        Some(Err(StoreError::Unavailable(_)))
    ));
    s.set_available(true);
    assert_eq!(
        s.get("/k").await.unwrap().unwrap().mod_revision,
        rev,
        "nothing lost"
    );
    let mut w = s.watch("/", rev + 1).await.unwrap();
    s.put("/k", b"2".to_vec()).await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().value, b"2");
}

#[tokio::test]
async fn a_watch_that_falls_behind_is_told_so() {
    let s = MemoryStore::new();
    let mut w = s.watch("/", 0).await.unwrap();
    for i in 0..(contiv_store::WATCH_BUFFER + 10) {
        s.put(&format!("/k/{i}"), vec![]).await.unwrap();
    }
    let mut last = None;
    while let Some(e) = w.next().await {
        last = Some(e);
    }
    assert_eq!(last, Some(Err(StoreError::WatchLagged)));
}
