//! The lock order of the services, checked.
//!
//! Services that hold state of their own take their locks in one order,
//! outermost first:
//!
//! ```text
//!   Rank::Pool     the configuration (disks, groups, volumes)  engine
//!   Rank::Family   one copy family's tree and store            copy
//!   Rank::Space    the space map (copy chunks, discards)       engine
//! ```
//!
//! A thread holding a lock of some rank may take only locks of a higher
//! rank; two locks of one rank are never held together. No ranked lock is
//! held across a durable commit of the pool database (`Meta::write`) or an
//! await. A guard of a ranked lock carries a [`Held`] token: in builds with
//! debug assertions (every test, the daemon the tests start) taking a lock
//! out of order, or committing while holding one, panics at once and names
//! both locks — where the same mistake in a release build could deadlock
//! under load or stall every worker behind an fsync. Release builds check
//! nothing and the token is empty.
//!
//! Locks private to one service that call out to no other service (a job
//! table, the slots of a RAID node, a range lock) are leaves and have no
//! rank.

#![forbid(unsafe_code)]

/// A lock's place in the order: lower ranks are taken first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// The pool's configuration state (`engine`).
    Pool = 0,
    /// A copy family's state (`copy::image::Family`).
    Family = 1,
    /// The space map (`engine::space`).
    Space = 2,
}

#[cfg_attr(not(debug_assertions), allow(dead_code))]
const RANKS: usize = 3;

impl Rank {
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    const ALL: [Rank; RANKS] = [Rank::Pool, Rank::Family, Rank::Space];

    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    fn name(self) -> &'static str {
        match self {
            Rank::Pool => "the pool lock",
            Rank::Family => "a copy family's state lock",
            Rank::Space => "the space map lock",
        }
    }
}

#[cfg(debug_assertions)]
thread_local! {
    /// How many locks of each rank this thread holds.
    static HELD: std::cell::Cell<[u8; RANKS]> = const { std::cell::Cell::new([0; RANKS]) };
}

/// Proof that this thread took a lock of its rank in order; dropped with
/// the lock's guard.
#[derive(Debug)]
#[must_use]
pub struct Held {
    #[cfg(debug_assertions)]
    rank: Rank,
}

/// Call before taking a lock of `rank` (before blocking on it, so that a
/// wrong order fails at once instead of deadlocking). Panics in debug
/// builds when this thread holds a lock of the same or a higher rank.
pub fn acquire(rank: Rank) -> Held {
    #[cfg(debug_assertions)]
    {
        HELD.with(|h| {
            let mut held = h.get();
            if let Some(worse) = (rank as usize..RANKS).find(|&r| held[r] > 0) {
                panic!(
                    "lock order: taking {} while holding {} (the order is pool, family, space)",
                    rank.name(),
                    Rank::ALL[worse].name()
                );
            }
            held[rank as usize] += 1;
            h.set(held);
        });
        Held { rank }
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = rank;
        Held {}
    }
}

impl Held {
    /// Runs `f` with the lock this token stands for let go (the caller
    /// unlocks it around `f` too).
    pub fn released<T>(&mut self, f: impl FnOnce() -> T) -> T {
        #[cfg(debug_assertions)]
        {
            HELD.with(|h| {
                let mut held = h.get();
                held[self.rank as usize] -= 1;
                h.set(held);
            });
            let out = f();
            std::mem::forget(acquire(self.rank));
            out
        }
        #[cfg(not(debug_assertions))]
        f()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        #[cfg(debug_assertions)]
        HELD.with(|h| {
            let mut held = h.get();
            held[self.rank as usize] = held[self.rank as usize].saturating_sub(1);
            h.set(held);
        });
    }
}

/// Panics in debug builds when this thread holds a ranked lock: `what` (a
/// durable commit) must not run under one.
pub fn assert_none_held(what: &str) {
    #[cfg(debug_assertions)]
    HELD.with(|h| {
        let held = h.get();
        if let Some(r) = (0..RANKS).find(|&r| held[r] > 0) {
            panic!("{what} while holding {}", Rank::ALL[r].name());
        }
    });
    #[cfg(not(debug_assertions))]
    let _ = what;
}

/// A guard of a ranked lock: derefs to the guard it wraps.
pub struct Guard<G> {
    guard: G,
    _held: Held,
}

impl<G> Guard<G> {
    /// Takes a lock of `rank` with `take`, checking the order first.
    pub fn take(rank: Rank, take: impl FnOnce() -> G) -> Guard<G> {
        let held = acquire(rank);
        Guard {
            guard: take(),
            _held: held,
        }
    }
}

impl<G: std::ops::Deref> std::ops::Deref for Guard<G> {
    type Target = G::Target;
    fn deref(&self) -> &G::Target {
        &self.guard
    }
}

impl<G: std::ops::DerefMut> std::ops::DerefMut for Guard<G> {
    fn deref_mut(&mut self) -> &mut G::Target {
        &mut self.guard
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::*;

    #[test]
    fn in_order_is_allowed_and_tokens_release() {
        let a = acquire(Rank::Pool);
        let b = acquire(Rank::Family);
        let c = acquire(Rank::Space);
        drop((c, b, a));
        // All released: any rank may be taken again.
        let _s = acquire(Rank::Space);
    }

    #[test]
    fn out_of_order_panics_naming_both_locks() {
        let r = std::thread::spawn(|| {
            let _f = acquire(Rank::Family);
            let _p = acquire(Rank::Pool);
        })
        .join();
        let msg = r
            .err()
            .and_then(|e| e.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(
            msg.contains("taking the pool lock while holding a copy family's state lock"),
            "{msg:?}"
        );
    }

    #[test]
    fn the_same_rank_twice_panics() {
        let r = std::thread::spawn(|| {
            let _a = acquire(Rank::Family);
            let _b = acquire(Rank::Family);
        })
        .join();
        assert!(r.is_err());
    }

    #[test]
    fn a_commit_under_a_lock_panics_and_released_lets_it_run() {
        let r = std::thread::spawn(|| {
            let _s = acquire(Rank::Space);
            assert_none_held("a durable commit");
        })
        .join();
        let msg = r
            .err()
            .and_then(|e| e.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert_eq!(msg, "a durable commit while holding the space map lock");
        let mut p = acquire(Rank::Pool);
        p.released(|| assert_none_held("a durable commit"));
        // Held again after `released`.
        let r = std::thread::spawn(|| {
            let mut p = acquire(Rank::Pool);
            p.released(|| {});
            let _again = acquire(Rank::Pool);
        })
        .join();
        assert!(r.is_err());
    }
}
