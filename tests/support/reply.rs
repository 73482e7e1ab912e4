//! How a fake upstream answers: fixed, slow, silent, failing, redirecting.

use std::time::Duration;

use super::OK;

/// How a fake upstream answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Status, headers and body, after a delay.
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
        delay: Duration,
    },
    /// Take the request and never answer (a silent upstream).
    Hang,
    /// Close the connection without an answer.
    Drop,
}

impl Reply {
    /// 200 and the IM "allow" answer.
    pub fn ok() -> Self {
        Self::json(OK)
    }

    /// 200 and `body`, byte for byte.
    pub fn json(body: &str) -> Self {
        Reply::Answer {
            status: 200,
            headers: Vec::new(),
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    /// 200 and an IM answer with this `ErrorCode`.
    pub fn code(code: i64) -> Self {
        Self::json(&format!(
            r#"{{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":{code}}}"#
        ))
    }

    /// 200 and an "allow" whose `ErrorInfo` is `tag`, to tell upstreams
    /// apart by their answers.
    pub fn tagged(tag: &str) -> Self {
        Self::json(&format!(
            r#"{{"ActionStatus":"OK","ErrorInfo":"{tag}","ErrorCode":0}}"#
        ))
    }

    /// `status` with the OK body.
    pub fn status(status: u16) -> Self {
        Reply::Answer {
            status,
            headers: Vec::new(),
            body: OK.to_owned(),
            delay: Duration::ZERO,
        }
    }

    /// 307 to `location`, no body.
    pub fn redirect(location: &str) -> Self {
        Reply::Answer {
            status: 307,
            headers: vec![("location".into(), location.into())],
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    /// The same answer, `delay` later (a slow upstream).
    pub fn after(mut self, later: Duration) -> Self {
        if let Reply::Answer { delay, .. } = &mut self {
            *delay = later;
        }
        self
    }
}
