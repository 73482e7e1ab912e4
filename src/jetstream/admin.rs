//! `callgate outbox` on the nats backend.
