//! The in-process store: a map behind a lock. Lost on restart; for tests, demos and a
//! single process that accepts logging everyone out on restart.
//!
//! Records are kept encoded (the same bytes the embedded store writes), which keeps a
//! session small (DESIGN §8: ≤ 512 B per session, measured by `benches/vault.rs`) and
//! runs the codec in every test.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use super::{Cas, Cleaned, FamilyId, FamilyRecord, Store, StoreError};

#[derive(Default)]
struct Inner {
    records: HashMap<FamilyId, Box<[u8]>>,
    subjects: HashMap<Box<str>, BTreeSet<FamilyId>>,
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
                if let Some(set) = inner.subjects.get_mut(old_subject) {
                    set.remove(id);
                    if set.is_empty() {
                        inner.subjects.remove(old_subject);
                    }
                }
            }
        }
        if let Some(subject) = new.subject.as_deref() {
            inner
                .subjects
                .entry(subject.into())
                .or_default()
                .insert(*id);
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
        let mut inner = self.lock();
        let mut cleaned = Cleaned::default();
        let mut gone = Vec::new();
        for (id, bytes) in &inner.records {
            // an undecodable record is left alone: removing it would be silent loss
            let Ok(r) = FamilyRecord::decode(bytes) else {
                continue;
            };
            if r.removable(now) {
                if r.revoked.is_some() {
                    cleaned.tombstones += 1;
                } else {
                    cleaned.expired += 1;
                }
                gone.push((*id, r.subject));
            } else if r.revoked.is_none() {
                cleaned.live += 1;
            }
        }
        for (id, subject) in gone {
            inner.records.remove(&id);
            if let Some(s) = subject {
                if let Some(set) = inner.subjects.get_mut(s.as_str()) {
                    set.remove(&id);
                    if set.is_empty() {
                        inner.subjects.remove(s.as_str());
                    }
                }
            }
        }
        Ok(cleaned)
    }
}
