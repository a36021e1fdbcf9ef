//! Session stores: where vault-mode family records live (DESIGN §4.4).
//!
//! One trait, [`Store`], with an in-process [`memory::MemoryStore`] (tests, one
//! process) and an on-disk [`embedded::EmbeddedStore`] (redb, the default; survives
//! restarts and `kill -9`). The store knows records, versions and deadlines; it knows
//! nothing of handles, keys or HTTP. Every change is a compare-and-swap on the record's
//! `version`, so two writers (two requests, two nodes) can never both win.
//!
//! The trait is async (the proxy glue is, and a networked store such as Redis is).
//! A store over blocking I/O (redb) runs its work on tokio's blocking pool, so an fsync
//! never blocks the proxy's runtime threads.

pub mod embedded;
pub mod memory;
pub mod record;
pub mod redis;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use record::{FamilyId, FamilyRecord, Revocation, RevokeReason, Sealed};

/// Which store to open (from `session.store` / `session.store_path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In-process map: lost on restart (tests, demos, one process).
    Memory,
    /// One redb file. `path` is absolute (the config loader resolves a relative
    /// `store_path` against the config file's directory).
    Embedded {
        /// The database file.
        path: PathBuf,
        /// How long start-up waits for a previous process to let go of the file
        /// before giving up (see [`embedded::EmbeddedStore::open`]).
        handover: Duration,
    },
    /// `store = "redis://…"`: shared by every replica (see [`redis::RedisStore`]).
    Redis(self::redis::RedisConfig),
}

/// Default for [`StoreConfig::Embedded::handover`]: a restart's old process has this
/// long to close the file.
pub const DEFAULT_HANDOVER: Duration = Duration::from_secs(30);

/// Why a store operation failed. None of these is ever a reason to revoke a family or
/// clear a cookie: the glue answers 503 and keeps everything.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The file exists but is not a readable session store (garbage, truncated,
    /// another program's file).
    #[error("session store {path}: the file is corrupted or not a rotagate session store ({detail}); restore it from a backup or move it away to start empty")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the database reported (never record contents).
        detail: String,
    },
    /// Reading or writing the file failed (permissions, full disk, …).
    #[error("session store {path}: {detail}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's or database's message.
        detail: String,
    },
    /// Another process holds the file and did not let go within the handover time.
    #[error("session store {path} is held by another process (still running after {waited_secs} s); one process at a time may open it")]
    Busy {
        /// The file.
        path: PathBuf,
        /// How long start-up waited.
        waited_secs: u64,
    },
    /// The store is not ready yet (a previous process still holds the file) or has
    /// failed; requests get 503 meanwhile.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The configured store cannot be used at all (a Redis Cluster, refused
    /// credentials, a URL the client does not understand): start-up fails.
    #[error("session store {url}: {detail}")]
    Unsupported {
        /// The store's URL (never holds a password).
        url: String,
        /// What is wrong, and what is expected instead.
        detail: String,
    },
    /// A stored record could not be decoded.
    #[error("session store record for family {family} cannot be decoded: {detail}")]
    Codec {
        /// The family id (hex; not a secret).
        family: String,
        /// The decoder's message.
        detail: String,
    },
}

/// The answer of a compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cas {
    /// Written; the record's version is now the one returned.
    Written(u64),
    /// Another writer changed (or created, or deleted) the record first.
    Conflict,
}

/// What one cleanup pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// Live records whose idle or absolute deadline passed.
    pub expired: u64,
    /// Tombstones whose family could no longer be presented.
    pub tombstones: u64,
    /// Live (not revoked, not expired) families left.
    pub live: u64,
}

/// A place to keep family records.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// `Ok(())` when the store can serve requests now (`/readyz`). Never blocks.
    fn ready(&self) -> Result<(), StoreError>;

    /// `Ok(())` when the store works now, else why not: `GET /store` and the
    /// `rotagate_store_up` gauge. Unlike [`Store::ready`] a networked store reports its
    /// outages here without taking the replica out of the load balancer. Never blocks.
    fn status(&self) -> Result<(), StoreError> {
        self.ready()
    }

    /// The record of `id` (its `version` is the stored one).
    async fn get(&self, id: &FamilyId) -> Result<Option<FamilyRecord>, StoreError>;

    /// Writes `record` (its `version` field is ignored; the store sets it) if the stored
    /// version is still `expected` (`None`: only if no record exists). The write is
    /// durable when this returns `Written` (the embedded store fsyncs first).
    async fn compare_and_swap(
        &self,
        id: &FamilyId,
        expected: Option<u64>,
        record: &FamilyRecord,
    ) -> Result<Cas, StoreError>;

    /// Families of `subject`, newest first (tombstones included).
    async fn by_subject(&self, subject: &str) -> Result<Vec<(FamilyId, FamilyRecord)>, StoreError>;

    /// Removes records that [`FamilyRecord::removable`] says may go, in small batches so
    /// no request waits long behind it, and counts the live families left. A store with
    /// its own expiry (Redis TTLs) may only count.
    async fn cleanup(&self, now: u64) -> Result<Cleaned, StoreError>;
}

/// Opens the configured store. Blocking (the embedded store may wait for a previous
/// process to close the file): call it at start-up, not on the runtime's threads.
pub fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    open_with_clock(config, Arc::new(crate::clock::SystemClock))
}

/// [`open`] with the clock a store with its own expiry (Redis TTLs) measures against.
pub fn open_with_clock(
    config: &StoreConfig,
    clock: Arc<dyn crate::clock::Clock>,
) -> Result<Arc<dyn Store>, StoreError> {
    match config {
        StoreConfig::Redis(c) => Ok(Arc::new(self::redis::RedisStore::open(c, clock)?)),
        StoreConfig::Memory => Ok(Arc::new(memory::MemoryStore::new())),
        StoreConfig::Embedded { path, handover } => {
            Ok(Arc::new(embedded::EmbeddedStore::open(path, *handover)?))
        }
    }
}

#[cfg(test)]
mod tests;
