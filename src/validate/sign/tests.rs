//! Unit tests of `sign`.

use super::*;

const VECTOR: &str = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn official_test_vector() {
    assert_eq!(expected_sign("xxxxyyyy", "1669872112"), VECTOR);
}

#[test]
fn accepts_within_the_window_only() {
    let w = Duration::from_secs(60);
    let ok = |now| verify_sign("xxxxyyyy", Some("1669872112"), Some(VECTOR), w, at(now));
    assert_eq!(ok(1669872112), Ok(()));
    assert_eq!(ok(1669872112 + 60), Ok(()));
    assert_eq!(ok(1669872112 - 60), Ok(()));
    assert_eq!(ok(1669872112 + 61), Err(SignError::Stale));
    assert_eq!(ok(1669872112 - 61), Err(SignError::Stale));
}

#[test]
fn refuses_every_malformed_pair() {
    let w = Duration::from_secs(60);
    let now = at(1669872112);
    let v = |t: Option<&str>, s: Option<&str>| verify_sign("xxxxyyyy", t, s, w, now);
    assert_eq!(v(None, Some(VECTOR)), Err(SignError::MissingTime));
    assert_eq!(v(Some("soon"), Some(VECTOR)), Err(SignError::BadTime));
    assert_eq!(v(Some("1669872112"), None), Err(SignError::MissingSign));
    assert_eq!(
        v(Some("1669872112"), Some(&VECTOR.to_uppercase())),
        Err(SignError::Mismatch)
    );
    assert_eq!(
        v(Some("1669872112"), Some(&VECTOR[..63])),
        Err(SignError::Mismatch)
    );
    assert_eq!(v(Some("1669872112"), Some("")), Err(SignError::Mismatch));
    assert_eq!(
        verify_sign("other", Some("1669872112"), Some(VECTOR), w, now),
        Err(SignError::Mismatch)
    );
}
