//! Unit tests of the admin address's token check.

use super::*;

fn headers(authorization: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(a) = authorization {
        h.insert(AUTHORIZATION, HeaderValue::from_str(a).unwrap());
    }
    h
}

#[test]
fn only_the_bearer_token_authorizes() {
    let token = Secret::new("s3cret".into());
    for good in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret"] {
        assert!(authorized(&headers(Some(good)), &token), "{good}");
    }
    for bad in [
        None,
        Some(""),
        Some("Bearer"),
        Some("Bearer "),
        Some("Bearer s3cre"),
        Some("Bearer s3cretX"),
        Some("Bearer S3CRET"),
        Some("Basic s3cret"),
        Some("s3cret"),
        Some("Bearers3cret"),
    ] {
        assert!(!authorized(&headers(bad), &token), "{bad:?}");
    }
}
