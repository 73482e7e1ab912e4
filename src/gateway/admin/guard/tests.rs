//! Unit tests of the admin connection registry.

use super::*;

fn stop() -> CancellationToken {
    CancellationToken::new()
}

async fn admit(r: &Arc<Registry>) -> Slot {
    r.admit(&stop()).await.expect("admitted")
}

fn is_evicted(slot: &Slot) -> bool {
    slot.evict.is_cancelled()
}

#[tokio::test(start_paused = true)]
async fn at_the_limit_the_longest_idle_connection_makes_room() {
    let r = Registry::new(3);
    let oldest = admit(&r).await;
    tokio::time::advance(Duration::from_millis(10)).await;
    let busy_old = admit(&r).await;
    let _in_flight = busy_old.requests().start();
    tokio::time::advance(Duration::from_millis(10)).await;
    let newer = admit(&r).await;
    assert_eq!(r.count(), 3);

    let fourth = admit(&r).await;
    assert!(is_evicted(&oldest), "the oldest idle one goes first");
    assert!(
        !is_evicted(&busy_old),
        "a connection with a request in flight stays"
    );
    assert!(!is_evicted(&newer) && !is_evicted(&fourth));
    assert_eq!(r.count(), 3);
    drop(oldest);
    assert_eq!(r.count(), 3, "an evicted slot is not counted twice");
}

#[tokio::test(start_paused = true)]
async fn with_every_connection_busy_admission_waits_for_one_to_go_idle() {
    let r = Registry::new(2);
    let a = admit(&r).await;
    let b = admit(&r).await;
    let in_flight_a = a.requests().start();
    let _in_flight_b = b.requests().start();
    let stop = stop();
    assert!(
        tokio::time::timeout(Duration::from_secs(1), r.room(&stop))
            .await
            .is_err(),
        "room while every connection is busy"
    );
    let waiting = tokio::spawn({
        let r = r.clone();
        async move { r.admit(&CancellationToken::new()).await.map(|s| s.id) }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!waiting.is_finished());
    // Answered: `a` is idle again, and so the one to close.
    drop(in_flight_a);
    let admitted = tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("admitted once a connection went idle")
        .unwrap();
    assert!(admitted.is_some());
    assert!(is_evicted(&a) && !is_evicted(&b));
}

#[tokio::test(start_paused = true)]
async fn a_closed_connection_frees_its_slot_and_stop_ends_waiting() {
    let r = Registry::new(1);
    let a = admit(&r).await;
    let _busy = a.requests().start();
    drop(a);
    assert_eq!(r.count(), 0);
    let b = admit(&r).await;
    let _busy = b.requests().start();
    let stop = stop();
    stop.cancel();
    assert!(!r.room(&stop).await);
    assert!(r.admit(&stop).await.is_none());
}
