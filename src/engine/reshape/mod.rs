//! Online restriping, the engine's service (seed 004, EMC, "Method and
//! apparatus for reconfiguring striped logical devices", FIGS. 4A/4B):
//! a group's stripe changes — disks added, another stripe size, or both —
//! while every volume of it keeps serving.
//!
//! ```text
//!   group reshape G ──(commit path) checks; record (phase establish);
//!        │             each volume of G, behind its closed gate, onto an
//!        │             Establish node (G's RAID node + the BCV's)
//!        ▼
//!   job reshape-copy ── the BCV copied (steps 104, 113)
//!        │ in sync: the lists made (steps 106, 111, 112: PB, IND, PS all
//!        ▼ set), the new RAID node and the Reshape node built, then
//!   the switch ── (commit path) every volume of G behind its closed gate;
//!        │        group record (new layout) + session record (phase
//!        │        transfer) in one commit; volumes onto the Reshape node;
//!        │        gates open: the pause is measured (steps 114-120)
//!        ▼
//!   instant split (FIG. 5) + job reshape-transfer (FIGS. 6A/6B); host
//!        │ requests meanwhile follow FIG. 7 (`crate::reshape`)
//!        ▼
//!   the end ── volumes onto the new RAID node; record deleted, lists'
//!              pages dropped, BCV disks free again (steps 121-124)
//! ```
//!
//! A restripe takes plain volumes only (no copy, pair or S-VOL group on
//! the group): those stack nodes hold the group's RAID node themselves.
//!
//! The service's state has its own lock, a leaf: nothing else is taken
//! while it is held, and it is never held across a commit or an await.

#![forbid(unsafe_code)]

mod ops;
mod switch;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::meta::model::reshape::ReshapeRecord;
use crate::reshape::{Establish, Reshape};
use crate::stack::raid::RaidDev;

/// PB columns: restripes that may run at once (seed 004's PB header of
/// two bytes per track).
pub(super) const COLUMNS: u8 = 16;

/// The data path of one restripe, by phase.
#[derive(Clone)]
pub(super) enum Node {
    Establish(Arc<Establish>),
    Reshape(Arc<Reshape>),
}

#[derive(Clone)]
pub(super) struct Session {
    pub(super) rec: ReshapeRecord,
    pub(super) node: Node,
    /// The BCV: the original layout over the BCV disks.
    pub(super) bcv: Arc<RaidDev>,
}

/// Restripes under way, by group.
#[derive(Default)]
pub(crate) struct Reshapes {
    st: Mutex<BTreeMap<String, Session>>,
}

impl Reshapes {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Session>> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, group: &str) -> Option<Session> {
        self.lock().get(group).cloned()
    }

    pub(super) fn all(&self) -> Vec<Session> {
        self.lock().values().cloned().collect()
    }

    pub(super) fn put(&self, s: Session) {
        self.lock().insert(s.rec.group.clone(), s);
    }

    pub(super) fn remove(&self, group: &str) -> Option<Session> {
        self.lock().remove(group)
    }

    /// A PB column no restripe uses.
    pub(super) fn free_column(&self) -> Option<u8> {
        let st = self.lock();
        (0..COLUMNS).find(|c| st.values().all(|s| s.rec.column != *c))
    }

    /// The group whose restripe holds disk `name` (as a BCV disk, or added
    /// and not yet a member).
    pub(super) fn holding(&self, name: &str) -> Option<String> {
        let st = self.lock();
        st.values()
            .find(|s| {
                s.rec
                    .bcv_disks
                    .iter()
                    .chain(&s.rec.added)
                    .any(|d| d == name)
            })
            .map(|s| s.rec.group.clone())
    }
}

impl crate::engine::Pool {
    /// The group whose restripe holds disk `name`, if one does.
    pub(in crate::engine) fn reshapes_holding(&self, name: &str) -> Option<String> {
        self.reshapes.holding(name)
    }
}
