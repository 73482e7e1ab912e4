//! Every answer callgate itself gives to IM, built in one place: failure
//! answers of the checks (SPEC 4.1), the fallback answers of decisions and
//! the acknowledgement of notifications. Each carries `x-callgate-outcome`.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::answer::OK_BODY;
pub use crate::common::Outcome;
use crate::validate::body::BodyError;
use crate::validate::{QueryError, SignError};

pub const OUTCOME_HEADER: HeaderName = HeaderName::from_static("x-callgate-outcome");
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

pub type Body = Full<Bytes>;

/// Why a callback was refused. The variants follow SPEC 4.1's order.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("method not allowed: callbacks are POST")]
    Method,
    #[error("{0}")]
    Query(#[from] QueryError),
    #[error("unknown SdkAppid {0}")]
    UnknownApp(u64),
    #[error("missing CallbackCommand")]
    MissingCommand,
    #[error("{0}")]
    Sign(#[from] SignError),
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    #[error("body not received in time")]
    BodyTimeout,
    #[error("cannot read body: {0}")]
    BodyRead(String),
    #[error("{0}")]
    Body(#[from] BodyError),
    #[error("unknown command {0} (strict_commands)")]
    UnknownCommand(String),
    /// The notification store cannot take it (full, failing, away).
    #[error("{0}")]
    Unavailable(String),
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Method => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::Query(_) | Rejection::MissingCommand => StatusCode::BAD_REQUEST,
            Rejection::UnknownApp(_) => StatusCode::FORBIDDEN,
            Rejection::Sign(_) => StatusCode::UNAUTHORIZED,
            Rejection::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::BodyRead(_) | Rejection::Body(_) | Rejection::UnknownCommand(_) => {
                StatusCode::BAD_REQUEST
            }
            Rejection::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON failure answer. `ErrorCode` repeats the HTTP status: it is
    /// non-zero, stable, and tells IM-side logs the class of failure.
    pub fn into_response(self, request_id: &HeaderValue) -> Response<Body> {
        let status = self.status();
        let body = serde_json::json!({
            "ActionStatus": "FAIL",
            "ErrorCode": status.as_u16(),
            "ErrorInfo": self.to_string(),
        });
        let mut response = json(
            status,
            Bytes::from(body.to_string()),
            Outcome::Rejected,
            request_id,
        );
        if matches!(self, Rejection::Method) {
            response
                .headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

/// The answer when the gateway decides itself (`answer::fallback_answer`).
pub fn fallback(body: Bytes, request_id: &HeaderValue) -> Response<Body> {
    json(StatusCode::OK, body, Outcome::Fallback, request_id)
}

/// An answer callgate combined from upstream answers.
pub fn merged(body: Bytes, request_id: &HeaderValue) -> Response<Body> {
    json(StatusCode::OK, body, Outcome::Merged, request_id)
}

/// The plain OK: notifications queued or unrouted.
pub fn ok(outcome: Outcome, request_id: &HeaderValue) -> Response<Body> {
    json(
        StatusCode::OK,
        Bytes::from_static(OK_BODY.as_bytes()),
        outcome,
        request_id,
    )
}

/// An upstream's answer, byte for byte.
pub fn upstream(body: Bytes, request_id: &HeaderValue) -> Response<Body> {
    json(StatusCode::OK, body, Outcome::Upstream, request_id)
}

fn json(
    status: StatusCode,
    body: Bytes,
    outcome: Outcome,
    request_id: &HeaderValue,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.reserve(3);
    headers.insert(CONTENT_TYPE, APPLICATION_JSON);
    headers.insert(OUTCOME_HEADER, HeaderValue::from_static(outcome.as_str()));
    headers.insert(REQUEST_ID_HEADER, request_id.clone());
    response
}
