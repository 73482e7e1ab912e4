//! On-disk records of the outbox, in a small versioned binary layout
//! (length-prefixed fields) so a body is stored as its exact bytes, never
//! re-encoded.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::common::Forward;

const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
#[error("corrupt outbox record: {0}")]
pub struct CorruptRecord(&'static str);

/// A notification as received: everything needed to send it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub received_ms: u64,
    pub peer: String,
    pub proto: String,
    pub request_id: String,
    pub command: String,
    pub query: String,
    pub body: Bytes,
}

impl EventRecord {
    pub fn from_forward(fwd: &Forward, command: &str, received_ms: u64) -> Self {
        Self {
            received_ms,
            peer: fwd.peer.to_string(),
            proto: fwd.proto.to_owned(),
            request_id: fwd.request_id().to_owned(),
            command: command.to_owned(),
            query: fwd.query.to_string(),
            body: fwd.body.clone(),
        }
    }

    pub fn to_forward(&self) -> Forward {
        Forward {
            query: Arc::from(self.query.as_str()),
            body: self.body.clone(),
            request_id: http::HeaderValue::from_str(&self.request_id)
                .unwrap_or(http::HeaderValue::from_static("-")),
            peer: self.peer.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            proto: if self.proto == "https" {
                "https"
            } else {
                "http"
            },
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.query.len() + self.body.len());
        out.push(VERSION);
        out.extend_from_slice(&self.received_ms.to_le_bytes());
        for field in [
            &self.peer,
            &self.proto,
            &self.request_id,
            &self.command,
            &self.query,
        ] {
            put(&mut out, field.as_bytes());
        }
        put(&mut out, &self.body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        let mut r = Reader::new(bytes)?;
        Ok(Self {
            received_ms: r.u64()?,
            peer: r.string()?,
            proto: r.string()?,
            request_id: r.string()?,
            command: r.string()?,
            query: r.string()?,
            body: Bytes::copy_from_slice(r.bytes()?),
        })
    }
}

/// One (event, upstream) delivery: its progress and its last failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub created_ms: u64,
    pub attempts: u32,
    pub next_at_ms: u64,
    pub last_error: String,
}

impl DeliveryRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.last_error.len());
        out.push(VERSION);
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.attempts.to_le_bytes());
        out.extend_from_slice(&self.next_at_ms.to_le_bytes());
        put(&mut out, self.last_error.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        let mut r = Reader::new(bytes)?;
        Ok(Self {
            created_ms: r.u64()?,
            attempts: r.u32()?,
            next_at_ms: r.u64()?,
            last_error: r.string()?,
        })
    }
}

fn put(out: &mut Vec<u8>, field: &[u8]) {
    // Fields are bounded by max_body (far below 4 GiB).
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&field[..len as usize]);
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, CorruptRecord> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => Ok(Self { rest }),
            Some(_) => Err(CorruptRecord("unknown version")),
            None => Err(CorruptRecord("empty")),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CorruptRecord> {
        if self.rest.len() < n {
            return Err(CorruptRecord("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, CorruptRecord> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| CorruptRecord("u64"))?,
        ))
    }

    fn u32(&mut self) -> Result<u32, CorruptRecord> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(
            b.try_into().map_err(|_| CorruptRecord("u32"))?,
        ))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CorruptRecord> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, CorruptRecord> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| CorruptRecord("not UTF-8"))
    }
}

#[cfg(test)]
mod tests;
