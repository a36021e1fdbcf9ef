//! The embedded store: one redb file, the default. Every write is a redb transaction
//! committed with `Durability::Immediate` (fsync) before it returns, so a `Set-Cookie`
//! that depends on a record never leaves before the record is on disk; a `kill -9`
//! loses nothing that was committed (redb repairs the file on the next open).
//!
//! The file belongs to one process at a time (redb locks it). A restart hands it over:
//! the new process's [`EmbeddedStore::open`] finds it locked, returns a store that is
//! not ready yet, and retries with backoff in the background until the old process has
//! closed it (or the handover time passes); vault requests meanwhile wait up to
//! [`REQUEST_WAIT`] and then get 503. A file that is not a readable rotagate store
//! (garbage, truncated, another program's) is an error naming it, never an empty start.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, MultimapTableDefinition, ReadableDatabase, ReadableTable,
    TableDefinition, TableHandle,
};

use super::{Cas, Cleaned, FamilyId, FamilyRecord, Store, StoreError};

/// How long one request waits for a store that is still being handed over.
pub const REQUEST_WAIT: Duration = Duration::from_secs(2);

/// Records removed per cleanup write transaction (a request's write waits behind at
/// most one batch).
const CLEANUP_BATCH: usize = 256;

/// family id → encoded [`FamilyRecord`].
const FAMILIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("families");
/// subject → family ids.
const SUBJECTS: MultimapTableDefinition<&str, &[u8]> = MultimapTableDefinition::new("subjects");
/// What this file is.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("rotagate");
const FORMAT_KEY: &str = "format";
const FORMAT: &[u8] = b"rotagate-sessions-1";

enum State {
    /// Another process holds the file; a thread retries.
    Opening,
    Ready(Arc<Database>),
    Failed(StoreError),
}

struct Shared {
    path: PathBuf,
    state: Mutex<State>,
    changed: Condvar,
    group: Mutex<Group>,
    group_changed: Condvar,
}

/// A compare-and-swap waiting for the next group commit.
struct Job {
    ticket: u64,
    id: FamilyId,
    expected: Option<u64>,
    record: FamilyRecord,
}

/// Group commit: concurrent compare-and-swaps (of different families, from the
/// blocking pool's threads) share one redb transaction and one fsync. The first waiter
/// finding no commit in progress leads: it takes every queued job (at most
/// [`GROUP_MAX`]), commits them together, and hands out the results; each job is still
/// checked on its own version, so a batch is exactly the same as the jobs one by one.
#[derive(Default)]
struct Group {
    next_ticket: u64,
    queue: Vec<Job>,
    leading: bool,
    done: std::collections::HashMap<u64, Result<Cas, StoreError>>,
}

/// Most compare-and-swaps in one commit.
const GROUP_MAX: usize = 128;

/// A redb-backed store.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

/// redb's errors, told apart: corruption, I/O, or something else (reported as I/O).
fn map_err(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    match e {
        redb::Error::Corrupted(detail) => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail,
        },
        redb::Error::UpgradeRequired(v) => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("written by an incompatible database version (file format {v})"),
        },
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: io.to_string(),
            }
        }
        other => StoreError::Io {
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    }
}

enum Attempt {
    Open(Database),
    Held,
}

fn try_open(path: &Path) -> Result<Attempt, StoreError> {
    // NOTE: redb 3.1 asserts (panics) on a file shorter than its header's layout, as a
    // truncated file is; that panic is caught here and reported like any corruption.
    let opened = std::panic::catch_unwind(|| Database::create(path)).map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the database refused the file".into());
        StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("truncated or damaged ({why})"),
        }
    })?;
    let db = match opened {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Ok(Attempt::Held),
        Err(redb::DatabaseError::Storage(redb::StorageError::Io(io)))
            if io.kind() != std::io::ErrorKind::InvalidData
                && io.kind() != std::io::ErrorKind::UnexpectedEof =>
        {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                detail: io.to_string(),
            })
        }
        // anything else while reading the file's header and pages is a file that is
        // not a sound redb database
        Err(e) => {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })
        }
    };
    check_format(path, &db)?;
    Ok(Attempt::Open(db))
}

/// Marks a new file as ours; refuses a redb file of another program.
fn check_format(path: &Path, db: &Database) -> Result<(), StoreError> {
    let foreign = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let mut txn = db.begin_write().map_err(|e| map_err(path, e))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| foreign(e.to_string()))?;
    let has_other_tables = txn
        .list_tables()
        .map_err(|e| map_err(path, e))?
        .any(|t| t.name() != META.name())
        || txn
            .list_multimap_tables()
            .map_err(|e| map_err(path, e))?
            .next()
            .is_some();
    {
        let mut meta = txn.open_table(META).map_err(|e| map_err(path, e))?;
        let found = meta
            .get(FORMAT_KEY)
            .map_err(|e| map_err(path, e))?
            .map(|v| v.value().to_vec());
        match found {
            Some(f) if f == FORMAT => {}
            Some(_) => {
                return Err(foreign(
                    "not a rotagate session store (format mark differs)".into(),
                ))
            }
            None if has_other_tables => {
                return Err(foreign(
                    "a database of another program (no rotagate format mark)".into(),
                ))
            }
            None => {
                meta.insert(FORMAT_KEY, FORMAT)
                    .map_err(|e| map_err(path, e))?;
            }
        }
    }
    txn.commit().map_err(|e| map_err(path, e))?;
    Ok(())
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `path` (absolute). A corrupted, truncated or
    /// foreign file is an error naming the file. A file held by another process is not an
    /// error: the store returned retries in the background for up to `handover` and is
    /// not [`Store::ready`] until then.
    pub fn open(path: &Path, handover: Duration) -> Result<EmbeddedStore, StoreError> {
        let state = match try_open(path)? {
            Attempt::Open(db) => State::Ready(Arc::new(db)),
            Attempt::Held => State::Opening,
        };
        let opening = matches!(state, State::Opening);
        let store = EmbeddedStore {
            shared: Arc::new(Shared {
                path: path.to_path_buf(),
                state: Mutex::new(state),
                changed: Condvar::new(),
                group: Mutex::new(Group::default()),
                group_changed: Condvar::new(),
            }),
        };
        if opening {
            tracing::info!(path = %path.display(), "session store is held by another process; waiting for it to close the file");
            let shared = store.shared.clone();
            std::thread::Builder::new()
                .name("rotagate-store-open".into())
                .spawn(move || retry_open(shared, handover))
                .map_err(|e| StoreError::Io {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                })?;
        }
        Ok(store)
    }

    /// Waits up to `timeout` for the store to be ready.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), StoreError> {
        self.db_within(timeout).map(|_| ())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn db_within(&self, wait: Duration) -> Result<Arc<Database>, StoreError> {
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
        loop {
            match &*state {
                State::Ready(db) => return Ok(db.clone()),
                State::Failed(e) => return Err(e.clone()),
                State::Opening => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(StoreError::Unavailable(format!(
                            "{} is not open yet (held by the previous process, or reopening after an I/O error)",
                            self.shared.path.display()
                        )));
                    }
                    state = self
                        .shared
                        .changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db_within(REQUEST_WAIT)
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        let e: redb::Error = e.into();
        if matches!(e, redb::Error::PreviousIo) {
            self.reopen();
        }
        map_err(&self.shared.path, e)
    }

    /// After an I/O error (a full or failing disk) redb refuses every later transaction
    /// until the database is closed and opened again. So the store drops its handle, is
    /// not ready meanwhile (`/readyz`), and a thread reopens the file until it works: a
    /// repaired disk brings vault mode back without a restart.
    fn reopen(&self) {
        let mut state = self.lock();
        if !matches!(*state, State::Ready(_)) {
            return; // already reopening
        }
        *state = State::Opening;
        drop(state);
        tracing::error!(path = %self.shared.path.display(), "session store I/O error: reopening the file");
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("rotagate-store-reopen".into())
            .spawn(move || reopen_until_open(shared));
        if let Err(e) = spawned {
            *self.lock() = State::Failed(StoreError::Io {
                path: self.shared.path.clone(),
                detail: e.to_string(),
            });
            self.shared.changed.notify_all();
        }
    }

    fn decode(id: &[u8], bytes: &[u8]) -> Result<FamilyRecord, StoreError> {
        FamilyRecord::decode(bytes).map_err(|detail| StoreError::Codec {
            family: id.iter().map(|b| format!("{b:02x}")).collect(),
            detail,
        })
    }

    /// [`Store::get`], blocking.
    pub fn get_blocking(&self, id: &FamilyId) -> Result<Option<FamilyRecord>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| self.err(e))?;
        let table = match txn.open_table(FAMILIES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let got = table.get(id.0.as_slice()).map_err(|e| self.err(e))?;
        got.map(|v| Self::decode(&id.0, v.value())).transpose()
    }

    /// [`Store::compare_and_swap`], blocking: durable (fsync) when it returns `Written`.
    /// Concurrent calls are group-committed (one transaction, one fsync).
    pub fn compare_and_swap_blocking(
        &self,
        id: &FamilyId,
        expected: Option<u64>,
        record: &FamilyRecord,
    ) -> Result<Cas, StoreError> {
        let lock = || self.shared.group.lock().unwrap_or_else(|p| p.into_inner());
        let mut g = lock();
        let ticket = g.next_ticket;
        g.next_ticket += 1;
        g.queue.push(Job {
            ticket,
            id: *id,
            expected,
            record: record.clone(),
        });
        loop {
            if let Some(result) = g.done.remove(&ticket) {
                return result;
            }
            if !g.leading && !g.queue.is_empty() {
                g.leading = true;
                let take = g.queue.len().min(GROUP_MAX);
                let jobs: Vec<Job> = g.queue.drain(..take).collect();
                drop(g);
                let tickets: Vec<u64> = jobs.iter().map(|j| j.ticket).collect();
                // a panic inside the database must not leave the group leaderless
                let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.commit_group(jobs)
                }))
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(
                        "the session store failed while writing".into(),
                    ))
                });
                let results = match committed {
                    Ok(r) => r,
                    Err(e) => tickets.iter().map(|_| Err(e.clone())).collect(),
                };
                g = lock();
                g.leading = false;
                g.done.extend(tickets.into_iter().zip(results));
                self.shared.group_changed.notify_all();
                continue;
            }
            g = self
                .shared
                .group_changed
                .wait(g)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Commits `jobs` in one durable transaction; one result per job, in order.
    fn commit_group(&self, jobs: Vec<Job>) -> Result<Vec<Result<Cas, StoreError>>, StoreError> {
        let db = self.db()?;
        let mut txn = db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| StoreError::Io {
                path: self.shared.path.clone(),
                detail: e.to_string(),
            })?;
        let mut results = Vec::with_capacity(jobs.len());
        {
            let mut families = txn.open_table(FAMILIES).map_err(|e| self.err(e))?;
            let mut subjects = txn.open_multimap_table(SUBJECTS).map_err(|e| self.err(e))?;
            for job in jobs {
                let id = job.id;
                let old = families
                    .get(id.0.as_slice())
                    .map_err(|e| self.err(e))?
                    .map(|v| Self::decode(&id.0, v.value()));
                let old = match old.transpose() {
                    Ok(o) => o,
                    // one undecodable record fails its own job only
                    Err(e) => {
                        results.push(Err(e));
                        continue;
                    }
                };
                if old.as_ref().map(|r| r.version) != job.expected {
                    results.push(Ok(Cas::Conflict));
                    continue;
                }
                let mut new = job.record;
                new.version = job.expected.map_or(1, |v| v + 1);
                families
                    .insert(id.0.as_slice(), new.encode().as_slice())
                    .map_err(|e| self.err(e))?;
                let old_subject = old.and_then(|r| r.subject);
                if old_subject != new.subject {
                    if let Some(s) = old_subject {
                        subjects
                            .remove(s.as_str(), id.0.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    if let Some(s) = &new.subject {
                        subjects
                            .insert(s.as_str(), id.0.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                }
                results.push(Ok(Cas::Written(new.version)));
            }
        }
        // nothing is reported written before this returns: the fsync is the promise
        txn.commit().map_err(|e| self.err(e))?;
        Ok(results)
    }

    /// [`Store::by_subject`], blocking.
    pub fn by_subject_blocking(
        &self,
        subject: &str,
    ) -> Result<Vec<(FamilyId, FamilyRecord)>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| self.err(e))?;
        let subjects = match txn.open_multimap_table(SUBJECTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let families = txn.open_table(FAMILIES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for id in subjects.get(subject).map_err(|e| self.err(e))? {
            let id = id.map_err(|e| self.err(e))?;
            let Ok(fid) = <[u8; 16]>::try_from(id.value()) else {
                continue;
            };
            if let Some(v) = families.get(id.value()).map_err(|e| self.err(e))? {
                out.push((FamilyId(fid), Self::decode(&fid, v.value())?));
            }
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.1.created));
        Ok(out)
    }

    /// [`Store::cleanup`], blocking: one read pass finds what may go, then small write
    /// transactions remove it (each re-checks the record, so a family touched meanwhile
    /// stays).
    pub fn cleanup_blocking(&self, now: u64) -> Result<Cleaned, StoreError> {
        let db = self.db()?;
        let mut cleaned = Cleaned::default();
        let mut gone: Vec<[u8; 16]> = Vec::new();
        {
            let txn = db.begin_read().map_err(|e| self.err(e))?;
            let families = match txn.open_table(FAMILIES) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(cleaned),
                Err(e) => return Err(self.err(e)),
            };
            for entry in families.iter().map_err(|e| self.err(e))? {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                // an undecodable record is left alone: removing it would be silent loss
                let Ok(r) = FamilyRecord::decode(v.value()) else {
                    continue;
                };
                if r.removable(now) {
                    if let Ok(id) = <[u8; 16]>::try_from(k.value()) {
                        gone.push(id);
                    }
                } else if r.revoked.is_none() && !r.expired(now) {
                    cleaned.live += 1;
                }
            }
        }
        for batch in gone.chunks(CLEANUP_BATCH) {
            let mut txn = db.begin_write().map_err(|e| self.err(e))?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| StoreError::Io {
                    path: self.shared.path.clone(),
                    detail: e.to_string(),
                })?;
            {
                let mut families = txn.open_table(FAMILIES).map_err(|e| self.err(e))?;
                let mut subjects = txn.open_multimap_table(SUBJECTS).map_err(|e| self.err(e))?;
                for id in batch {
                    let record = families
                        .get(id.as_slice())
                        .map_err(|e| self.err(e))?
                        .and_then(|v| FamilyRecord::decode(v.value()).ok());
                    let Some(r) = record.filter(|r| r.removable(now)) else {
                        continue;
                    };
                    families.remove(id.as_slice()).map_err(|e| self.err(e))?;
                    if let Some(s) = &r.subject {
                        subjects
                            .remove(s.as_str(), id.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    if r.revoked.is_some() {
                        cleaned.tombstones += 1;
                    } else {
                        cleaned.expired += 1;
                    }
                }
            }
            txn.commit().map_err(|e| self.err(e))?;
        }
        Ok(cleaned)
    }

    /// Runs `f` on tokio's blocking pool (an fsync never blocks a runtime thread).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EmbeddedStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|_| StoreError::Unavailable("the session store task failed".into()))?
    }
}

/// Reopens the file after an I/O error, with backoff (at most 5 s apart), until it
/// opens: requests still holding the old handle finish first (the file is "held" until
/// then), and a disk that is still failing is tried again rather than given up on.
fn reopen_until_open(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        std::thread::sleep(backoff);
        match try_open(&shared.path) {
            Ok(Attempt::Open(db)) => {
                tracing::info!(path = %shared.path.display(), "session store reopened");
                *shared.state.lock().unwrap_or_else(|p| p.into_inner()) =
                    State::Ready(Arc::new(db));
                shared.changed.notify_all();
                return;
            }
            Ok(Attempt::Held) => {}
            Err(e) => tracing::warn!(error = %e, "session store still failing; retrying"),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Retries opening a file another process holds, with backoff, until `handover` passes.
fn retry_open(shared: Arc<Shared>, handover: Duration) {
    let start = Instant::now();
    let mut backoff = Duration::from_millis(20);
    let result = loop {
        std::thread::sleep(backoff);
        match try_open(&shared.path) {
            Ok(Attempt::Open(db)) => break State::Ready(Arc::new(db)),
            Ok(Attempt::Held) if start.elapsed() < handover => {
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Ok(Attempt::Held) => {
                break State::Failed(StoreError::Busy {
                    path: shared.path.clone(),
                    waited_secs: start.elapsed().as_secs(),
                })
            }
            Err(e) => break State::Failed(e),
        }
    };
    match &result {
        State::Ready(_) => tracing::info!(path = %shared.path.display(), "session store opened"),
        State::Failed(e) => tracing::error!(error = %e, "session store could not be opened"),
        State::Opening => {}
    }
    *shared.state.lock().unwrap_or_else(|p| p.into_inner()) = result;
    shared.changed.notify_all();
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    fn ready(&self) -> Result<(), StoreError> {
        match &*self.lock() {
            State::Ready(_) => Ok(()),
            State::Opening => Err(StoreError::Unavailable(format!(
                "{} is not open yet (held by the previous process, or reopening after an I/O error)",
                self.shared.path.display()
            ))),
            State::Failed(e) => Err(e.clone()),
        }
    }

    async fn get(&self, id: &FamilyId) -> Result<Option<FamilyRecord>, StoreError> {
        let id = *id;
        self.blocking(move |s| s.get_blocking(&id)).await
    }

    async fn compare_and_swap(
        &self,
        id: &FamilyId,
        expected: Option<u64>,
        record: &FamilyRecord,
    ) -> Result<Cas, StoreError> {
        let id = *id;
        let record = record.clone();
        self.blocking(move |s| s.compare_and_swap_blocking(&id, expected, &record))
            .await
    }

    async fn by_subject(&self, subject: &str) -> Result<Vec<(FamilyId, FamilyRecord)>, StoreError> {
        let subject = subject.to_string();
        self.blocking(move |s| s.by_subject_blocking(&subject))
            .await
    }

    async fn cleanup(&self, now: u64) -> Result<Cleaned, StoreError> {
        self.blocking(move |s| s.cleanup_blocking(now)).await
    }
}
