//! The built-in catalog of IM callback commands (`shared/callbacks.md` §2.1–2.10
//! and the Live list of §2.11).
//!
//! It answers the request path's questions about a command: is it a decision
//! or a notification, which top-level body fields can the gateway count on,
//! how is its answer read and combined (its answer family, SPEC 4.5), and does
//! IM fail closed on it.
//!
//! A wrongly required field makes the gateway reject a genuine callback (a lost
//! notification, or a decision that bypasses the app's policy), so the field
//! lists are deliberately short: a field is listed only when the reference
//! shows it as a core field of the documented sample with no caveat. Fields
//! that are conditional, newer than some doc snapshots, known only from SDK
//! models, or that can legitimately be absent (optional in the API that
//! triggers the callback) are left out. Unknown fields are always accepted.

use std::collections::HashMap;
use std::sync::LazyLock;

/// Whether IM acts on the answer (decision) or ignores it (notification).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// IM waits for the answer and acts on its `ErrorCode`.
    Decision,
    /// IM ignores the answer.
    Notification,
}

/// The JSON type a required field must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonType {
    /// A JSON string.
    Str,
    /// Any JSON number.
    Int,
    /// A JSON number, or a string of one or more ASCII decimal digits
    /// (IM's samples quote `EventTime` on many pages).
    IntOrStr,
    /// A JSON array (contents not checked).
    Arr,
    /// A JSON object (contents not checked).
    Obj,
}

impl JsonType {
    /// The wording used in error messages ("field X must be a ...").
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            JsonType::Str => "string",
            JsonType::Int => "number",
            JsonType::IntOrStr => "number or numeric string",
            JsonType::Arr => "array",
            JsonType::Obj => "object",
        }
    }
}

/// A checked top-level body field (per event for [`Shape::Batch`]).
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: JsonType,
    /// Absent is an error. When false the field is only type-checked when
    /// present (`EventTime`, missing from older IM samples).
    pub required: bool,
}

/// How a command's body is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One object that normally repeats `CallbackCommand`.
    Single,
    /// One object without `CallbackCommand` (`ContentCallback.ResultNotify`).
    NoCommand,
    /// `{"Events":[{...}, ...]}`; each event carries `CallbackCommand` and the
    /// command's `fields` (`Push.*`).
    Batch,
}

/// How a decision's answer is read and combined (SPEC 4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// `ErrorCode` 0 allows, and may replace `MsgBody` / `CloudCustomData`;
    /// 2 drops the message silently; other codes deny.
    Message,
    /// With `ErrorCode` 0 the listed accounts are refused, the rest go ahead.
    Partial,
    /// `ResultItem` decides per friend; the top-level `ErrorCode` is ignored.
    PerFriend,
    /// `ErrorCode` 0 allows, anything else denies.
    Plain,
}

impl Family {
    /// The family's name as SPEC 4.5 writes it (logs, `check`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Family::Message => "message",
            Family::Partial => "partial",
            Family::PerFriend => "per-friend",
            Family::Plain => "plain",
        }
    }
}

/// One catalog entry.
#[derive(Debug)]
pub struct Command {
    pub name: &'static str,
    pub kind: Kind,
    pub shape: Shape,
    pub fields: &'static [Field],
    /// The answer family; `Plain` for every notification.
    pub family: Family,
    /// IM itself blocks the action when no answer comes, so the gateway's
    /// fallback defaults to deny for it (SPEC 4.5).
    pub fails_closed: bool,
}

// ---- small const helpers that keep the table (`commands.rs`) readable ----

const fn s(name: &'static str) -> Field {
    Field {
        name,
        ty: JsonType::Str,
        required: true,
    }
}
const fn i(name: &'static str) -> Field {
    Field {
        name,
        ty: JsonType::Int,
        required: true,
    }
}
const fn a(name: &'static str) -> Field {
    Field {
        name,
        ty: JsonType::Arr,
        required: true,
    }
}
const fn o(name: &'static str) -> Field {
    Field {
        name,
        ty: JsonType::Obj,
        required: true,
    }
}
/// `EventTime`: milliseconds (seconds for `Push.*`), number or numeric
/// string. Type-checked when present but never required: IM samples from
/// before 2022-12 lack it on many commands, and it carries nothing the
/// gateway needs.
const ET: Field = Field {
    name: "EventTime",
    ty: JsonType::IntOrStr,
    required: false,
};

const D: Kind = Kind::Decision;
const N: Kind = Kind::Notification;

const fn cmd(name: &'static str, kind: Kind, fields: &'static [Field]) -> Command {
    shaped(name, kind, Shape::Single, fields)
}
const fn shaped(name: &'static str, kind: Kind, shape: Shape, fields: &'static [Field]) -> Command {
    Command {
        name,
        kind,
        shape,
        fields,
        family: Family::Plain,
        fails_closed: false,
    }
}

impl Command {
    /// A decision whose answer is not plain (SPEC 4.5's family column).
    const fn answers(mut self, family: Family) -> Self {
        self.family = family;
        self
    }
    /// IM blocks the action when no answer comes in time.
    const fn failing_closed(mut self) -> Self {
        self.fails_closed = true;
        self
    }
}

mod commands;
pub use commands::COMMANDS;

static BY_NAME: LazyLock<HashMap<&'static str, &'static Command>> =
    LazyLock::new(|| COMMANDS.iter().map(|c| (c.name, c)).collect());

/// The catalog entry for an exact command name (case-sensitive, as IM sends it).
#[must_use]
pub fn lookup(name: &str) -> Option<&'static Command> {
    BY_NAME.get(name).copied()
}

/// The position of a catalog entry in `COMMANDS` (a table index for
/// per-command state); `None` for a `Command` not taken from it.
#[must_use]
pub fn index(command: &Command) -> Option<usize> {
    let offset = (command as *const Command as usize).checked_sub(COMMANDS.as_ptr() as usize)?;
    let i = offset / std::mem::size_of::<Command>().max(1);
    COMMANDS
        .get(i)
        .filter(|c| std::ptr::eq(*c, command))
        .map(|_| i)
}

/// The kind of any command: the catalog's, else guessed from the name
/// (`CallbackBefore` / `CallbackPrev` are decisions, everything else notifies).
#[must_use]
pub fn kind_by_name(name: &str) -> Kind {
    match lookup(name) {
        Some(c) => c.kind,
        None if name.contains("CallbackBefore") || name.contains("CallbackPrev") => Kind::Decision,
        None => Kind::Notification,
    }
}

/// The answer family of a command; an uncatalogued one is plain.
#[must_use]
pub fn family_of(command: Option<&Command>) -> Family {
    command.map_or(Family::Plain, |c| c.family)
}

#[cfg(test)]
mod tests;
