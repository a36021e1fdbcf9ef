//! The in-process store: a map behind a lock. Lost on restart; for tests, demos and a
//! single process that accepts logging everyone out on restart.
//!
//! Records are kept encoded (the same bytes the embedded store writes), which keeps a
//! session small (DESIGN §8: ≤ 512 B per session, measured by `benches/vault.rs`) and
//! runs the codec in every test.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Cas, Cleaned, FamilyId, FamilyRecord, Store, StoreError};

/// Records looked at per lock hold during cleanup.
const CLEANUP_BATCH: usize = 1024;

#[derive(Default)]
struct Inner {
    records: HashMap<FamilyId, Box<[u8]>>,
    /// A subject has few families (its logins); a vector is far smaller than a set.
    subjects: HashMap<Box<str>, Vec<FamilyId>>,
}

impl Inner {
    fn unindex(&mut self, subject: &str, id: &FamilyId) {
        if let Some(ids) = self.subjects.get_mut(subject) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                self.subjects.remove(subject);
            }
        }
    }
}

/// In-process family records.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // a panic while holding the lock cannot leave a half-written map (every change
        // is one insert), so a poisoned lock is still safe to use
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn decode(id: &FamilyId, bytes: &[u8]) -> Result<FamilyRecord, StoreError> {
    FamilyRecord::decode(bytes).map_err(|detail| StoreError::Codec {
        family: id.to_hex(),
        detail,
    })
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn get(&self, id: &FamilyId) -> Result<Option<FamilyRecord>, StoreError> {
        let inner = self.lock();
        inner.records.get(id).map(|b| decode(id, b)).transpose()
    }

    async fn compare_and_swap(
        &self,
        id: &FamilyId,
        expected: Option<u64>,
        record: &FamilyRecord,
    ) -> Result<Cas, StoreError> {
        let mut inner = self.lock();
        let old = inner.records.get(id).map(|b| decode(id, b)).transpose()?;
        let old_version = old.as_ref().map(|r| r.version);
        if old_version != expected {
            return Ok(Cas::Conflict);
        }
        let mut new = record.clone();
        new.version = expected.map_or(1, |v| v + 1);
        if let Some(old_subject) = old.as_ref().and_then(|r| r.subject.as_deref()) {
            if new.subject.as_deref() != Some(old_subject) {
                inner.unindex(old_subject, id);
            }
        }
        if let Some(subject) = new.subject.as_deref() {
            let ids = inner.subjects.entry(subject.into()).or_default();
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
        inner.records.insert(*id, new.encode().into_boxed_slice());
        Ok(Cas::Written(new.version))
    }

    async fn by_subject(&self, subject: &str) -> Result<Vec<(FamilyId, FamilyRecord)>, StoreError> {
        let inner = self.lock();
        let mut out = Vec::new();
        for id in inner.subjects.get(subject).into_iter().flatten() {
            if let Some(bytes) = inner.records.get(id) {
                out.push((*id, decode(id, bytes)?));
            }
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.1.created));
        Ok(out)
    }

    async fn cleanup(&self, now: u64) -> Result<Cleaned, StoreError> {
        // ids first, then small batches under the lock, so requests wait behind at most
        // one batch, never behind the whole map
        let ids: Vec<FamilyId> = self.lock().records.keys().copied().collect();
        let mut cleaned = Cleaned::default();
        for batch in ids.chunks(CLEANUP_BATCH) {
            self.cleanup_batch(batch, now, &mut cleaned);
            tokio::task::yield_now().await;
        }
        Ok(cleaned)
    }
}

impl MemoryStore {
    fn cleanup_batch(&self, batch: &[FamilyId], now: u64, cleaned: &mut Cleaned) {
        {
            let mut inner = self.lock();
            for id in batch {
                // gone meanwhile, or undecodable (left alone: removing it would be
                // silent loss)
                let Some(r) = inner
                    .records
                    .get(id)
                    .and_then(|b| FamilyRecord::decode(b).ok())
                else {
                    continue;
                };
                if r.removable(now) {
                    if r.revoked.is_some() {
                        cleaned.tombstones += 1;
                    } else {
                        cleaned.expired += 1;
                    }
                    inner.records.remove(id);
                    if let Some(s) = &r.subject {
                        inner.unindex(s, id);
                    }
                } else if r.revoked.is_none() && !r.expired(now) {
                    cleaned.live += 1;
                }
            }
        }
    }
}
