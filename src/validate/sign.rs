//! Callback authentication (SPEC 4.3): `Sign` is the lowercase hex SHA-256
//! of the app token followed by the `RequestTime` string. Only the
//! timestamp is signed, so the freshness window is what stops replays.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{constant_time, digest};

use super::query::parse_decimal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("missing RequestTime")]
    MissingTime,
    #[error("RequestTime must be Unix seconds")]
    BadTime,
    #[error("RequestTime is outside the accepted window")]
    Stale,
    #[error("missing Sign")]
    MissingSign,
    #[error("Sign does not match")]
    Mismatch,
}

/// The Sign IM computes for `token` and `request_time`, as 64 lowercase hex
/// characters.
pub fn expected_sign(token: &str, request_time: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(token.as_bytes());
    ctx.update(request_time.as_bytes());
    let digest = ctx.finish();
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Verifies the pair against `token` at time `now`. The digest comparison
/// is constant-time so the answer's timing does not leak how much of a
/// guessed Sign was right.
pub fn verify_sign(
    token: &str,
    request_time: Option<&str>,
    sign: Option<&str>,
    window: Duration,
    now: SystemTime,
) -> Result<(), SignError> {
    let time_text = request_time.ok_or(SignError::MissingTime)?;
    let time = parse_decimal(time_text).ok_or(SignError::BadTime)?;
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if now.abs_diff(time) > window.as_secs() {
        return Err(SignError::Stale);
    }
    let sign = sign.ok_or(SignError::MissingSign)?;
    let expected = expected_sign(token, time_text);
    constant_time::verify_slices_are_equal(expected.as_bytes(), sign.as_bytes())
        .map_err(|_| SignError::Mismatch)
}

#[cfg(test)]
mod tests {
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
}
