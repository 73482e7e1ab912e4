//! Checks on an inbound callback, in the order SPEC 4.1 lists them. Each
//! check is a pure function; the request pipeline (`server::callback`)
//! calls them in order and turns a failure into an answer.

pub mod body;
mod query;
mod sign;

pub use query::{CallbackQuery, QueryError, parse_query};
pub use sign::{SignError, expected_sign, verify_sign};
