//! Per-family single-flight inside the process: concurrent requests of one family take
//! turns on one slot, and while any of them is in it, the record read (or written) by
//! one is the record the next one decides on, without another store round trip. The
//! slot (and its cached record) goes away when the last concurrent request leaves, so a
//! later request reads the store again (another node may have written).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::{FamilyId, FamilyRecord};

/// What concurrent requests of one family share.
#[derive(Debug, Default)]
pub struct SlotState {
    /// The record as last read or written by a request in the slot: `None` = not read
    /// yet (or invalidated), `Some(None)` = no such family.
    pub cached: Option<Option<FamilyRecord>>,
    /// `cached` carries soft changes not written yet (see `decide::Write::Soft`).
    pub dirty: bool,
}

type Slot = tokio::sync::Mutex<SlotState>;

/// The slots of every family with a request in flight.
#[derive(Debug, Default)]
pub struct Flights {
    slots: Mutex<HashMap<FamilyId, (Arc<Slot>, usize)>>,
}

impl Flights {
    /// Joins the slot of `family` (creating it).
    pub fn join(&self, family: FamilyId) -> Ticket<'_> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let entry = slots.entry(family).or_default();
        entry.1 += 1;
        Ticket {
            flights: self,
            family,
            slot: entry.0.clone(),
            joined: true,
        }
    }

    /// Families with requests in flight (tests).
    pub fn in_flight(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn leave(&self, family: &FamilyId) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = slots.get_mut(family) else {
            return true;
        };
        entry.1 -= 1;
        if entry.1 == 0 {
            slots.remove(family);
            true
        } else {
            false
        }
    }
}

/// One request's place in a family's slot. Dropping it leaves (a cancelled request
/// never keeps a slot alive).
#[derive(Debug)]
pub struct Ticket<'a> {
    flights: &'a Flights,
    family: FamilyId,
    slot: Arc<Slot>,
    joined: bool,
}

impl Ticket<'_> {
    /// Waits for this request's turn in the slot.
    pub async fn lock(&self) -> tokio::sync::OwnedMutexGuard<SlotState> {
        self.slot.clone().lock_owned().await
    }

    /// Leaves the slot (call while still holding the lock, before writing soft
    /// changes): true when this was the last request in it, which then writes them.
    pub fn leave(&mut self) -> bool {
        if !std::mem::replace(&mut self.joined, false) {
            return false;
        }
        self.flights.leave(&self.family)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.joined {
            self.flights.leave(&self.family);
        }
    }
}
