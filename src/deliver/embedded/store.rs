//! The outbox file: one redb database in `delivery.outbox`, three tables.
//!
//! - `events`: event id -> the notification as received;
//! - `pending`: (event id, upstream) -> delivery progress;
//! - `dead`: (event id, upstream) -> the delivery that gave up.
//!
//! An event row lives as long as a pending or dead row names it. All calls
//! are synchronous: the gateway makes them from its writer thread or
//! `spawn_blocking`, the `callgate outbox` commands directly.

use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use super::files;
use crate::deliver::record::{CorruptRecord, DeliveryRecord, EventRecord};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot create the outbox folder {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("the outbox {0} is in use by another process (a running gateway?)")]
    InUse(PathBuf),
    #[error(
        "the outbox {0} was written by an older format ({1}) and must be drained or moved away"
    )]
    Format(PathBuf, u8),
    #[error("outbox storage: {0}")]
    Db(#[from] redb::Error),
    #[error("{0}")]
    Corrupt(#[from] CorruptRecord),
    #[error("the outbox writer has stopped")]
    Closed,
    #[error("the outbox cannot write ({0}); it is re-opened as soon as the disk takes writes")]
    Unwritable(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for OutboxError {
            fn from(e: $t) -> Self {
                OutboxError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A pending or dead delivery as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: u64,
    pub upstream: String,
    pub record: DeliveryRecord,
}

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const PENDING: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("pending");
const DEAD: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("dead");

pub const FILE_NAME: &str = "outbox.redb";

/// One change to the outbox; the writer applies many in one transaction.
#[derive(Debug)]
pub enum Op {
    /// A new event and a pending delivery per upstream.
    Append {
        id: u64,
        event: Vec<u8>,
        deliveries: Vec<(String, DeliveryRecord)>,
    },
    Delivered {
        id: u64,
        upstream: String,
    },
    Retry {
        id: u64,
        upstream: String,
        record: DeliveryRecord,
    },
    Dead {
        id: u64,
        upstream: String,
        record: DeliveryRecord,
    },
    /// Takes out an event whose commit was reported failed (IM got 503)
    /// in case it reached the file after all, with its deliveries.
    Discard {
        id: u64,
    },
}

impl Op {
    /// The delivery a progress update is about (None for whole events):
    /// a later update of the same delivery supersedes an earlier one.
    pub fn delivery(&self) -> Option<(u64, &str)> {
        match self {
            Op::Delivered { id, upstream }
            | Op::Retry { id, upstream, .. }
            | Op::Dead { id, upstream, .. } => Some((*id, upstream.as_str())),
            Op::Append { .. } | Op::Discard { .. } => None,
        }
    }
}

pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the outbox in `dir`, private to this user (the
    /// folder 0700, the file 0600). A second process opening the same file
    /// is refused: redb locks it.
    pub fn open(dir: &Path) -> Result<Store, OutboxError> {
        files::prepare_folder(dir)?;
        let path = dir.join(FILE_NAME);
        files::prepare_file(&path)?;
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => OutboxError::InUse(path.clone()),
            redb::DatabaseError::UpgradeRequired(v) => OutboxError::Format(path.clone(), v),
            other => OutboxError::Db(other.into()),
        })?;
        let txn = db.begin_write()?;
        {
            txn.open_table(EVENTS)?;
            txn.open_table(PENDING)?;
            txn.open_table(DEAD)?;
        }
        txn.commit()?;
        Ok(Store { db, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies `ops` in one transaction. `durable`: fsync before returning
    /// (acknowledgements wait for this); otherwise the changes reach disk
    /// with the next durable commit, and a crash before it only repeats a
    /// delivery (at-least-once).
    pub fn apply<'a>(
        &self,
        ops: impl IntoIterator<Item = &'a Op>,
        durable: bool,
    ) -> Result<(), OutboxError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(|e| OutboxError::Db(redb::Error::from(e)))?;
        {
            let mut events = txn.open_table(EVENTS)?;
            let mut pending = txn.open_table(PENDING)?;
            let mut dead = txn.open_table(DEAD)?;
            for op in ops {
                match op {
                    Op::Append {
                        id,
                        event,
                        deliveries,
                    } => {
                        events.insert(id, event.as_slice())?;
                        for (upstream, record) in deliveries {
                            pending.insert((*id, upstream.as_str()), record.encode().as_slice())?;
                        }
                    }
                    Op::Delivered { id, upstream } => {
                        pending.remove((*id, upstream.as_str()))?;
                        drop_event_if_unused(*id, &mut events, &pending, &dead)?;
                    }
                    Op::Retry {
                        id,
                        upstream,
                        record,
                    } => {
                        // Only a delivery still pending is updated (a purge
                        // or replay by an operator wins).
                        if pending.get((*id, upstream.as_str()))?.is_some() {
                            pending.insert((*id, upstream.as_str()), record.encode().as_slice())?;
                        }
                    }
                    Op::Dead {
                        id,
                        upstream,
                        record,
                    } => {
                        pending.remove((*id, upstream.as_str()))?;
                        dead.insert((*id, upstream.as_str()), record.encode().as_slice())?;
                    }
                    Op::Discard { id } => {
                        let keys: Vec<String> = pending
                            .range((*id, "")..(*id + 1, ""))?
                            .map(|e| e.map(|(k, _)| k.value().1.to_owned()))
                            .collect::<Result<_, _>>()?;
                        for upstream in &keys {
                            pending.remove((*id, upstream.as_str()))?;
                        }
                        drop_event_if_unused(*id, &mut events, &pending, &dead)?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The next unused event id.
    pub fn next_id(&self) -> Result<u64, OutboxError> {
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        Ok(events.last()?.map_or(1, |(k, _)| k.value() + 1))
    }

    pub fn event(&self, id: u64) -> Result<Option<EventRecord>, OutboxError> {
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        match events.get(id)? {
            Some(v) => Ok(Some(EventRecord::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Every pending (or dead) delivery, in event order.
    pub fn rows(&self, dead: bool) -> Result<Vec<Row>, OutboxError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(if dead { DEAD } else { PENDING })?;
        let mut out = Vec::with_capacity(usize::try_from(table.len()?).unwrap_or(0));
        for entry in table.iter()? {
            let (k, v) = entry?;
            let (id, upstream) = k.value();
            out.push(Row {
                id,
                upstream: upstream.to_owned(),
                record: DeliveryRecord::decode(v.value())?,
            });
        }
        Ok(out)
    }

    pub fn counts(&self) -> Result<(u64, u64, u64), OutboxError> {
        let txn = self.db.begin_read()?;
        Ok((
            txn.open_table(EVENTS)?.len()?,
            txn.open_table(PENDING)?.len()?,
            txn.open_table(DEAD)?.len()?,
        ))
    }

    /// Makes deliveries due now with fresh attempts: dead ones move back to
    /// pending (`dead`), or pending ones skip their backoff. Returns how many.
    pub fn replay(
        &self,
        dead: bool,
        upstream: Option<&str>,
        now_ms: u64,
    ) -> Result<usize, OutboxError> {
        let rows = self.rows_of(dead, upstream)?;
        let txn = self.db.begin_write()?;
        {
            let mut pending = txn.open_table(PENDING)?;
            let mut dead_table = txn.open_table(DEAD)?;
            for row in &rows {
                let record = DeliveryRecord {
                    attempts: 0,
                    next_at_ms: now_ms,
                    ..row.record.clone()
                };
                if dead {
                    dead_table.remove((row.id, row.upstream.as_str()))?;
                }
                pending.insert((row.id, row.upstream.as_str()), record.encode().as_slice())?;
            }
        }
        txn.commit()?;
        Ok(rows.len())
    }

    /// Pending or dead rows, of one upstream or all.
    fn rows_of(&self, dead: bool, upstream: Option<&str>) -> Result<Vec<Row>, OutboxError> {
        Ok(self
            .rows(dead)?
            .into_iter()
            .filter(|r| upstream.is_none_or(|u| u == r.upstream))
            .collect())
    }

    /// Deletes dead letters (of one upstream, or all) and the events no
    /// longer needed. Returns how many dead letters went.
    pub fn purge_dead(&self, upstream: Option<&str>) -> Result<usize, OutboxError> {
        let rows = self.rows_of(true, upstream)?;
        let txn = self.db.begin_write()?;
        {
            let mut events = txn.open_table(EVENTS)?;
            let pending = txn.open_table(PENDING)?;
            let mut dead = txn.open_table(DEAD)?;
            for row in &rows {
                dead.remove((row.id, row.upstream.as_str()))?;
                drop_event_if_unused(row.id, &mut events, &pending, &dead)?;
            }
        }
        txn.commit()?;
        Ok(rows.len())
    }
}

fn drop_event_if_unused(
    id: u64,
    events: &mut redb::Table<u64, &[u8]>,
    pending: &redb::Table<(u64, &str), &[u8]>,
    dead: &redb::Table<(u64, &str), &[u8]>,
) -> Result<(), OutboxError> {
    let range = (id, "")..(id + 1, "");
    if pending.range(range.clone())?.next().is_none() && dead.range(range)?.next().is_none() {
        events.remove(id)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
