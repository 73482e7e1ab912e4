//! Unit tests of `record`.

use super::*;

#[test]
fn records_round_trip() {
    let e = EventRecord {
        received_ms: 1_700_000_000_123,
        peer: "::1".into(),
        proto: "https".into(),
        request_id: "abc".into(),
        command: "State.StateChange".into(),
        query: "SdkAppid=1&CallbackCommand=State.StateChange".into(),
        body: Bytes::from_static(b"{\"x\":\"\xe4\xbd\xa0\"}"),
    };
    assert_eq!(EventRecord::decode(&e.encode()).unwrap(), e);
    let d = DeliveryRecord {
        created_ms: 5,
        attempts: 3,
        next_at_ms: 9,
        last_error: "status 503".into(),
    };
    assert_eq!(DeliveryRecord::decode(&d.encode()).unwrap(), d);
    let fwd = e.to_forward();
    assert_eq!((fwd.proto, fwd.peer.to_string().as_str()), ("https", "::1"));
}

#[test]
fn corrupt_records_are_errors_not_panics() {
    let d = DeliveryRecord {
        created_ms: 5,
        attempts: 3,
        next_at_ms: 9,
        last_error: "e".into(),
    }
    .encode();
    for cut in 0..d.len() {
        assert!(DeliveryRecord::decode(&d[..cut]).is_err());
    }
    assert!(EventRecord::decode(&[2, 0, 0]).is_err());
    assert!(
        EventRecord::decode(&[
            1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
        ])
        .is_err()
    );
}
