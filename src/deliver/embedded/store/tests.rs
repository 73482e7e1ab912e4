//! Unit tests of `store`.

use super::*;
use std::os::unix::fs::PermissionsExt;

fn record(attempts: u32) -> DeliveryRecord {
    DeliveryRecord {
        created_ms: 1,
        attempts,
        next_at_ms: 2,
        last_error: String::new(),
    }
}

fn append(id: u64, upstreams: &[&str]) -> Op {
    Op::Append {
        id,
        event: vec![1, 2, 3],
        deliveries: upstreams
            .iter()
            .map(|u| (u.to_string(), record(0)))
            .collect(),
    }
}

#[test]
fn discard_takes_an_event_out_with_its_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .apply(&[append(1, &["a", "b"]), append(2, &["a"])], true)
        .unwrap();
    store.apply(&[Op::Discard { id: 1 }], true).unwrap();
    assert_eq!(store.counts().unwrap(), (1, 1, 0));
    assert_eq!(store.rows(false).unwrap()[0].id, 2);
    // Discarding what is not there (the refused commit never landed) is
    // a no-op, and so is applying the same progress twice.
    let retry = Op::Retry {
        id: 2,
        upstream: "a".into(),
        record: record(3),
    };
    store
        .apply(&[Op::Discard { id: 7 }, retry, Op::Discard { id: 1 }], true)
        .unwrap();
    let done = Op::Delivered {
        id: 2,
        upstream: "a".into(),
    };
    store.apply([&done, &done], true).unwrap();
    assert_eq!(store.counts().unwrap(), (0, 0, 0));
}

#[test]
fn progress_names_its_delivery() {
    let dead = Op::Dead {
        id: 4,
        upstream: "u".into(),
        record: record(8),
    };
    assert_eq!(dead.delivery(), Some((4, "u")));
    assert_eq!(append(4, &["u"]).delivery(), None);
    assert_eq!(Op::Discard { id: 4 }.delivery(), None);
}

#[test]
fn the_outbox_is_private_to_its_user() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("data").join("outbox");
    drop(Store::open(&outbox).unwrap());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&outbox), 0o700);
    assert_eq!(mode(&outbox.join(FILE_NAME)), 0o600);
}
