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
mod tests;
