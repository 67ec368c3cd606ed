//! Room in the store for a host write (seed 000 FIG. 13: free-space
//! collection frees space "before any host write can fail").
//!
//! A copy write that finds the store full and the group out of space is
//! tried again by the volume's switch, outside its gate and locks, each
//! time [`Family::room`] says room may have come:
//!
//! 1. slots freed since the last commit come back with the next one: the
//!    wait commits; slots committed free but still under a read in flight
//!    (`fence.rs`) come back when it ends: the wait tries again;
//! 2. chunks the store emptied go back to the group (the owner's
//!    [`HandBack`], awaited: their discard done, the group has the space),
//!    and chunks given back before whose discard is still running are
//!    waited for;
//! 3. while a collection (`collect.rs`) has a pair to merge, each track it
//!    moves frees the child's slot and wakes the waiters
//!    (`Family::room_freed`); while it packs areas (`pack.rs`), each area
//!    given back does.
//!
//! Host writes are thereby paced by the collection when space runs out,
//! instead of failing; when nothing frees space the wait ends at once
//! with "no space".

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::image::Family;
use crate::blockdev::DevFuture;
use crate::error::{Error, ErrorKind, Result};

/// How often the log says that writes wait for room.
const SAY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Gives chunks (group offset, bytes) the store emptied back to the group
/// (none, to wait for the ones given back before); resolves once the group
/// can allocate them again, to whether any were.
pub type HandBack = Box<dyn Fn(Vec<(u64, u64)>) -> DevFuture<'static, bool> + Send + Sync>;

impl Family {
    /// Sets how emptied chunks go back to the group at once (the owner,
    /// when it opens the family; a second call changes nothing).
    pub fn set_hand_back(&self, f: HandBack) {
        let _ = self.hand_back.set(f);
    }

    /// Resolves once a write that found no room may find some (see the
    /// module); `Err` if nothing frees room.
    pub async fn room(self: &Arc<Self>) -> Result<()> {
        // Registered before the state is looked at: a slot freed after the
        // look still wakes this write.
        let freed = self.room.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        // Areas to pack: the pool's periodic check starts the collection
        // within seconds (an empty plan wakes this write to fail at once).
        let pack_due = self.pack_due();
        let (pending, retired, collecting) = {
            let st = self.read_state();
            let collecting =
                st.merging.is_some() || st.merge_pair().is_some() || st.packing || pack_due;
            let retired = st.store.retired_len() > 0;
            // Emptied chunks go back once their removal is saved.
            let pending = st.store.pending_len() > 0 || st.store.chunks_changed();
            (pending, retired, collecting)
        };
        if pending {
            self.commit().await?;
        }
        if retired && !self.reuse_retired(&mut self.write_state()) {
            // Reads in flight still use them: they end in moments.
            tokio::task::yield_now().await;
        }
        if let Some(hand_back) = self.hand_back.get()
            && hand_back(self.take_released()).await
        {
            return Ok(());
        }
        if pending || retired {
            return Ok(());
        }
        if !collecting {
            return Err(Error::new(
                ErrorKind::NoSpace,
                "no copy space is being freed (no free-space collection to run)",
            ));
        }
        // Counted while waiting, however the wait ends (the switch drops
        // it when its time is up).
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if self.room_waiters.fetch_add(1, Ordering::Relaxed) == 0 {
            self.say_waiting();
        }
        let _waiting = Waiting(&self.room_waiters);
        freed.await;
        Ok(())
    }

    /// Whether writes wait for the collection now (it then goes at full
    /// depth: they are the host, waiting).
    pub fn wants_room(&self) -> bool {
        self.room_waiters.load(Ordering::Relaxed) > 0
    }

    /// Tells the operator, at most every [`SAY_EVERY`], that host writes
    /// are paced by the collection (they are slower, not failing).
    fn say_waiting(&self) {
        let mut last = self.room_said.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < SAY_EVERY) {
            return;
        }
        *last = Some(std::time::Instant::now());
        tracing::info!(
            "copy family {}: its store is full; host writes wait for the free-space \
             collection (`ferrosan job list`) instead of failing",
            self.object
        );
    }

    /// Saves the removal of chunks the store emptied, if any waits: they
    /// go back to the group only once that is durable
    /// ([`crate::copy::store::Store::take_released`]).
    pub async fn settle_released(self: &Arc<Self>) -> Result<()> {
        if self.read_state().store.chunks_changed() {
            self.commit().await?;
        }
        Ok(())
    }

    /// Wakes writes waiting for room: slots were freed.
    pub fn room_freed(&self) {
        self.room.notify_waiters();
    }
}
