//! The geometry of a RAID group: level, stripe size, member sizes, and the
//! mapping between the group's address space and member space.

use std::fmt;

use crate::error::{Error, Result, check_range};
use crate::units::format_exact;

/// Default stripe size: 64 KiB on each member, one default track.
pub const DEFAULT_STRIPE: u64 = 64 * 1024;
/// Smallest stripe size: one 4 KiB block.
pub const MIN_STRIPE: u64 = 4096;
/// Most members one group may have.
pub const MAX_MEMBERS: usize = 256;

/// How a RAID group places data on its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaidLevel {
    /// Members one after another.
    Concat,
    /// Strips dealt round-robin over the members, no redundancy.
    Raid0,
    /// Every member (leg) holds all data: an n-way mirror.
    Raid1,
    /// Strips plus one rotating parity strip per row (left-symmetric).
    Raid5,
}

impl RaidLevel {
    /// Fewest members the level works with.
    pub fn min_members(self) -> usize {
        match self {
            RaidLevel::Concat => 1,
            RaidLevel::Raid0 | RaidLevel::Raid1 => 2,
            RaidLevel::Raid5 => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RaidLevel::Concat => "concat",
            RaidLevel::Raid0 => "raid0",
            RaidLevel::Raid1 => "raid1",
            RaidLevel::Raid5 => "raid5",
        }
    }
}

impl fmt::Display for RaidLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a byte of member space holds (the inverse mapping, for rebuild).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Data of the group's address `addr` (raid1: on every leg).
    Data { addr: u64 },
    /// Parity of stripe row `row` (raid5).
    Parity { row: u64 },
}

/// A validated RAID group geometry. Cheap to clone; all mapping is pure.
///
/// Invariants (checked by [`Layout::new`]): the stripe size `S` is a power
/// of two of at least [`MIN_STRIPE`]; every member's used size is a
/// non-zero multiple of `S`; the capacity fits in `u64`. Every mapping
/// result therefore stays below a member's used size, and intermediate
/// products stay below the capacity, so mapping cannot overflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    level: RaidLevel,
    stripe: u64,
    /// Members, as u64 (at most [`MAX_MEMBERS`]).
    n: u64,
    /// Bytes used on each member: a multiple of `stripe`.
    usable: Vec<u64>,
    /// concat: the address of each member's first byte; else all zero.
    starts: Vec<u64>,
    capacity: u64,
}

/// Converts a value known to be below [`MAX_MEMBERS`] to an index.
pub(super) fn to_index(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

fn to_u64(x: usize) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

fn check_stripe(stripe: u64) -> Result<()> {
    if !stripe.is_power_of_two() || stripe < MIN_STRIPE {
        return Err(Error::invalid(format!(
            "stripe size {} must be a power of two of at least {}",
            format_exact(stripe),
            format_exact(MIN_STRIPE)
        )));
    }
    Ok(())
}

fn check_count(level: RaidLevel, n: usize) -> Result<()> {
    let min = level.min_members();
    if n < min {
        let s = if min == 1 { "" } else { "s" };
        return Err(Error::invalid(format!(
            "{level} needs at least {min} disk{s}, got {n}"
        )));
    }
    if n > MAX_MEMBERS {
        return Err(Error::invalid(format!(
            "{level} takes at most {MAX_MEMBERS} disks, got {n}"
        )));
    }
    Ok(())
}

/// Each member's size rounded down to the stripe size; none may be empty.
fn rounded_sizes(stripe: u64, sizes: &[u64]) -> Result<Vec<u64>> {
    let mut out = Vec::with_capacity(sizes.len());
    for (i, &size) in sizes.iter().enumerate() {
        let usable = size - size % stripe;
        if usable == 0 {
            return Err(Error::invalid(format!(
                "disk {i} holds {}, less than one strip ({})",
                format_exact(size),
                format_exact(stripe)
            )));
        }
        out.push(usable);
    }
    Ok(out)
}

fn too_big(level: RaidLevel) -> Error {
    Error::invalid(format!("the {level} group would exceed 2^64 bytes"))
}

impl Layout {
    /// Validates a geometry: member count per level, stripe size, member
    /// sizes. `member_sizes` are the members' data-area sizes in bytes.
    pub fn new(level: RaidLevel, stripe_size: u64, member_sizes: &[u64]) -> Result<Layout> {
        check_count(level, member_sizes.len())?;
        check_stripe(stripe_size)?;
        let rounded = rounded_sizes(stripe_size, member_sizes)?;
        let n = to_u64(member_sizes.len());
        let min = rounded.iter().copied().min().unwrap_or(0);
        let (usable, capacity) = match level {
            RaidLevel::Concat => {
                let total = rounded.iter().try_fold(0u64, |a, &s| a.checked_add(s));
                (rounded, total.ok_or_else(|| too_big(level))?)
            }
            RaidLevel::Raid0 => (
                vec![min; rounded.len()],
                n.checked_mul(min).ok_or_else(|| too_big(level))?,
            ),
            RaidLevel::Raid1 => (vec![min; rounded.len()], min),
            RaidLevel::Raid5 => (
                vec![min; rounded.len()],
                (n - 1).checked_mul(min).ok_or_else(|| too_big(level))?,
            ),
        };
        let mut starts = vec![0u64; usable.len()];
        if level == RaidLevel::Concat {
            let mut at = 0u64;
            for (s, &u) in starts.iter_mut().zip(&usable) {
                *s = at;
                at += u;
            }
        }
        Ok(Layout {
            level,
            stripe: stripe_size,
            n,
            usable,
            starts,
            capacity,
        })
    }

    pub fn level(&self) -> RaidLevel {
        self.level
    }

    /// Bytes of one strip (`S`).
    pub fn stripe_size(&self) -> u64 {
        self.stripe
    }

    pub fn members(&self) -> usize {
        self.usable.len()
    }

    /// Bytes of the group's address space.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes the group uses on member `idx` (0 for no such member).
    pub fn member_usable(&self, idx: usize) -> u64 {
        self.usable.get(idx).copied().unwrap_or(0)
    }

    /// Rows of member space: units of rebuild and resync progress. Row `r`
    /// is member offsets `r*S .. (r+1)*S`. For concat, the largest member's.
    pub fn rows(&self) -> u64 {
        self.usable.iter().copied().max().unwrap_or(0) / self.stripe
    }

    /// The row holding member offset `member_off`.
    pub fn row_of(&self, member_off: u64) -> u64 {
        member_off / self.stripe
    }

    /// Members that may be missing with all data still readable.
    pub fn redundancy(&self) -> usize {
        match self.level {
            RaidLevel::Concat | RaidLevel::Raid0 => 0,
            RaidLevel::Raid1 => self.members() - 1,
            RaidLevel::Raid5 => 1,
        }
    }

    pub fn is_redundant(&self) -> bool {
        self.redundancy() > 0
    }

    /// Address bytes one row lock covers: a raid5 stripe row's data
    /// (`(n-1)*S`), otherwise one strip (`S`).
    pub fn lock_grain(&self) -> u64 {
        match self.level {
            RaidLevel::Raid5 => (self.n - 1) * self.stripe,
            _ => self.stripe,
        }
    }

    /// Data strips per raid5 row (`n - 1`).
    pub fn data_strips(&self) -> usize {
        self.members().saturating_sub(1)
    }

    /// The parity member of raid5 row `row`: `(n-1) - (row % n)`.
    pub fn parity_member(&self, row: u64) -> Option<usize> {
        (self.level == RaidLevel::Raid5).then(|| to_index(self.n - 1 - row % self.n))
    }

    /// The member holding data strip `strip` (0-based, `< n-1`) of raid5
    /// row `row`: `(p + 1 + strip) % n` with `p` the parity member.
    pub fn data_member(&self, row: u64, strip: usize) -> Option<usize> {
        let p = to_u64(self.parity_member(row)?);
        let i = to_u64(strip);
        (i < self.n - 1).then(|| to_index((p + 1 + i) % self.n))
    }

    /// Which data strip of raid5 row `row` member `member` holds; `None`
    /// for the parity member (or another level).
    pub fn strip_of(&self, row: u64, member: usize) -> Option<usize> {
        let p = to_u64(self.parity_member(row)?);
        let m = to_u64(member);
        (m < self.n && m != p).then(|| to_index((m + self.n - p - 1) % self.n))
    }

    /// The inverse mapping: what member offset `member_off` of `member`
    /// holds; `None` outside the member's used size.
    pub fn locate(&self, member: usize, member_off: u64) -> Option<Role> {
        if member_off >= self.member_usable(member) {
            return None;
        }
        let s = self.stripe;
        let m = to_u64(member);
        let (row, within) = (member_off / s, member_off % s);
        let addr = match self.level {
            RaidLevel::Concat => self.starts.get(member)? + member_off,
            RaidLevel::Raid0 => (row * self.n + m) * s + within,
            RaidLevel::Raid1 => member_off,
            RaidLevel::Raid5 => {
                let Some(strip) = self.strip_of(row, member) else {
                    return Some(Role::Parity { row });
                };
                (row * (self.n - 1) + to_u64(strip)) * s + within
            }
        };
        Some(Role::Data { addr })
    }

    /// Where address `addr` (< capacity) lives: (member, member offset,
    /// bytes to the end of its piece).
    pub(super) fn place(&self, addr: u64) -> (usize, u64, u64) {
        let s = self.stripe;
        match self.level {
            RaidLevel::Concat => {
                let m = self
                    .starts
                    .partition_point(|&st| st <= addr)
                    .saturating_sub(1);
                let off = addr - self.starts.get(m).copied().unwrap_or(0);
                (m, off, self.member_usable(m).saturating_sub(off))
            }
            RaidLevel::Raid0 => {
                let c = addr / s;
                (
                    to_index(c % self.n),
                    (c / self.n) * s + addr % s,
                    s - addr % s,
                )
            }
            RaidLevel::Raid1 => (0, addr, self.capacity - addr),
            RaidLevel::Raid5 => {
                let grain = (self.n - 1) * s;
                let (row, within) = (addr / grain, addr % grain);
                let strip = to_index(within / s);
                let m = self.data_member(row, strip).unwrap_or(usize::MAX);
                (m, row * s + within % s, s - within % s)
            }
        }
    }

    /// Checks `off..off+len` against the capacity.
    pub fn check(&self, off: u64, len: u64) -> Result<()> {
        check_range(off, len, self.capacity)
    }
}
