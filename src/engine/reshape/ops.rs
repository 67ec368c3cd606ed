//! `group reshape` and its status: the checks and records of FIG. 4A
//! steps 101-110, and the two jobs (the BCV's copy, then the transfer).

#![forbid(unsafe_code)]

use std::sync::Arc;

use super::{Node, Session};
use crate::api::views::reshape::{ReshapeInfo, ReshapeLayout, ReshapeRequest};
use crate::api::views::{JobInfo, RaidLevelName};
use crate::blockdev::{BlockDev, DevFuture};
use crate::engine::Pool;
use crate::engine::groups::layout_level;
use crate::error::{Error, Result};
use crate::jobs::{MakeWork, Work};
use crate::layout::Layout;
use crate::meta::model::reshape::{ReshapePhase, ReshapeRecord};
use crate::meta::model::{JobKind, JobRecord, SlotState, now};
use crate::reshape::establish::CHUNK;
use crate::reshape::{Establish, Reshape};

/// Stripe sizes a group may take (as `group create`).
const STRIPES: std::ops::RangeInclusive<u64> = 4096..=(16 << 20);

impl Pool {
    /// `group reshape G`: checks the request, stores the session, puts
    /// the Establish node under the group's volumes and starts the copy.
    /// On the commit path.
    pub async fn reshape_start(&self, group: &str, req: ReshapeRequest) -> Result<JobInfo> {
        let rec = self.reshape_plan(group, &req)?;
        let bcv = self.reshape_bcv(&rec)?;
        let est = Arc::new(Establish::new(self.group_raid(group)?, bcv.clone())?);
        let kind = JobKind::ReshapeCopy {
            group: group.to_string(),
        };
        let total = rec.old_size.div_ceil(CHUNK).max(1);
        let job = self.store_new_job(kind, total, CHUNK, 0)?;
        let rec = ReshapeRecord { job: job.id, ..rec };
        self.meta.write(true, |tx| tx.put_reshape(&rec))?;
        self.reshapes.put(Session {
            rec: rec.clone(),
            node: Node::Establish(Arc::clone(&est)),
            bcv,
        });
        self.retarget(group, est).await;
        tracing::info!(
            "group {group}: restripe started (stripe {} -> {}, {} disk(s) added), copying onto {}",
            rec.old_stripe,
            rec.new_stripe,
            rec.added.len(),
            rec.bcv_disks.join(", ")
        );
        let make = self.reshape_work(&job)?;
        Ok(self.jobs.start(job, make))
    }

    /// The session record a request makes, checked (steps 101-103, 110).
    fn reshape_plan(&self, group: &str, req: &ReshapeRequest) -> Result<ReshapeRecord> {
        let st = self.group_entry_locked(group)?;
        let g = &st.groups[group];
        if !matches!(g.rec.level, RaidLevelName::Raid0 | RaidLevelName::Raid5) {
            return Err(Error::invalid(format!(
                "group {group} is {}: only striped groups (raid0, raid5) are restriped; \
                 a concat group grows with `ferrosan group extend`",
                g.rec.level
            )));
        }
        if self.reshapes.get(group).is_some() {
            return Err(Error::conflict(format!(
                "group {group} is being restriped already: see `ferrosan group reshape-status {group}`"
            )));
        }
        let column = self.reshapes.free_column().ok_or_else(|| {
            Error::conflict(format!(
                "{} restripes are under way, the most that can run at once: wait for one to end",
                super::COLUMNS
            ))
        })?;
        if g.rec.slots.iter().any(|s| s.state != SlotState::Ok) {
            return Err(Error::conflict(format!(
                "group {group} has a member that is not ok: replace or rebuild it first"
            )));
        }
        if self
            .jobs
            .active()
            .iter()
            .any(|(_, k)| crate::engine::rebuild::job_group(k) == Some(group))
            || self.sparing_of_group(group)
        {
            return Err(Error::conflict(format!(
                "group {group} has a job running or is being spared: wait for it first"
            )));
        }
        for v in st.volumes.values().filter(|v| v.rec.group == group) {
            let thick: Arc<dyn BlockDev> = v.thick.clone();
            if !same(&v.dev.current(), &thick) || v.rec.family.is_some() {
                return Err(Error::conflict(format!(
                    "volume {} of group {group} is in a copy, pair or S-VOL group: \
                     only groups of plain volumes are restriped",
                    v.rec.name
                )));
            }
        }
        let stripe = req.stripe_size.unwrap_or(g.rec.stripe_size);
        if !stripe.is_power_of_two() || !STRIPES.contains(&stripe) {
            return Err(Error::invalid(format!(
                "stripe size {} must be a power of two between 4 KiB and 16 MiB",
                crate::units::format_exact(stripe)
            )));
        }
        if req.add_disks.is_empty() && stripe == g.rec.stripe_size {
            return Err(Error::invalid(
                "nothing to change: add disks (--add-disks) or give another stripe size (--stripe-size)",
            ));
        }
        let mut named = req.add_disks.clone();
        named.extend(req.bcv_disks.iter().cloned());
        for d in &named {
            self.refuse_work_disk(d)?;
        }
        let sizes = Self::check_free_disks(&st, &named)?;
        let (added, bcv) = sizes.split_at(req.add_disks.len());
        let old = Layout::new(
            layout_level(g.rec.level),
            g.rec.stripe_size,
            &g.rec.member_sizes,
        )?;
        if req.bcv_disks.len() != g.rec.slots.len() {
            return Err(Error::invalid(format!(
                "the copy needs one disk per member of group {group}: {} (--bcv-disks), {} given",
                g.rec.slots.len(),
                req.bcv_disks.len()
            )));
        }
        for (i, (d, s)) in req.bcv_disks.iter().zip(bcv).enumerate() {
            if *s < g.rec.member_sizes[i] {
                return Err(Error::invalid(format!(
                    "disk {d} holds {} bytes; member {i}'s copy needs {}",
                    s, g.rec.member_sizes[i]
                )));
            }
        }
        let all: Vec<u64> = g.rec.member_sizes.iter().chain(added).copied().collect();
        let min = all.iter().copied().min().unwrap_or(0) / stripe * stripe;
        let new_sizes = vec![min; all.len()];
        let new = Layout::new(layout_level(g.rec.level), stripe, &new_sizes)?;
        if new.capacity() < old.capacity() {
            return Err(Error::invalid(format!(
                "the new layout would hold {} bytes, less than the group's {}: \
                 add a disk or choose another stripe size",
                new.capacity(),
                old.capacity()
            )));
        }
        let disks = g
            .rec
            .slots
            .iter()
            .map(|s| s.disk.clone().unwrap_or_default());
        Ok(ReshapeRecord {
            group: group.to_string(),
            column,
            phase: ReshapePhase::Establish,
            old_stripe: g.rec.stripe_size,
            old_member_sizes: g.rec.member_sizes.clone(),
            old_disks: disks.collect(),
            old_size: old.capacity(),
            new_stripe: stripe,
            added: req.add_disks.clone(),
            new_member_sizes: new_sizes,
            bcv_disks: req.bcv_disks.clone(),
            track: new.lock_grain(),
            pb: self.next_object(),
            ind: self.next_object(),
            ps: self.next_object(),
            job: 0,
            pause_us: 0,
            created: now(),
        })
    }

    /// The restripe of `group`, as `group reshape-status` shows it.
    pub fn reshape_status(&self, group: &str) -> Result<ReshapeInfo> {
        let s = self.reshapes.get(group).ok_or_else(|| {
            Error::not_found(format!(
                "group {group} is not being restriped (`ferrosan group reshape {group} ...`)"
            ))
        })?;
        let r = &s.rec;
        let level = self
            .lock()
            .groups
            .get(group)
            .map_or(RaidLevelName::Raid0, |g| g.rec.level);
        let new_disks: Vec<String> = r.old_disks.iter().chain(&r.added).cloned().collect();
        let new_size = Layout::new(layout_level(level), r.new_stripe, &r.new_member_sizes)
            .map(|l| l.capacity())
            .unwrap_or(0);
        let mut info = ReshapeInfo {
            group: group.to_string(),
            phase: match r.phase {
                ReshapePhase::Establish => "establish".into(),
                ReshapePhase::Transfer => "transfer".into(),
            },
            session: r.column,
            old: ReshapeLayout {
                stripe_size: r.old_stripe,
                disks: r.old_disks.clone(),
                size: r.old_size,
            },
            new: ReshapeLayout {
                stripe_size: r.new_stripe,
                disks: new_disks,
                size: new_size,
            },
            bcv_disks: r.bcv_disks.clone(),
            job: r.job,
            track_size: r.track,
            copied: 0,
            tracks: new_size.div_ceil(r.track.max(1)),
            tracks_left: new_size.div_ceil(r.track.max(1)),
            pb: 0,
            ind: 0,
            ps: 0,
            moved_background: 0,
            moved_on_demand: 0,
            overwritten: 0,
            zeroed: 0,
            pause_us: r.pause_us,
        };
        match &s.node {
            Node::Establish(e) => info.copied = e.cursor(),
            Node::Reshape(n) => {
                let l = n.lists();
                let m = n.moved();
                info.copied = r.old_size;
                info.tracks_left = n.left();
                (info.pb, info.ind, info.ps) = (l.pb.count(), l.ind.count(), l.ps.count());
                info.moved_background = m.background;
                info.moved_on_demand = m.on_demand;
                info.overwritten = m.overwritten;
                info.zeroed = m.zeroed;
            }
        }
        Ok(info)
    }

    /// The work of a restripe job.
    pub(in crate::engine) fn reshape_work(&self, rec: &JobRecord) -> Result<MakeWork> {
        let pool = self.arc()?;
        let (group, copy) = match &rec.kind {
            JobKind::ReshapeCopy { group } => (group.clone(), true),
            JobKind::ReshapeTransfer { group } => (group.clone(), false),
            _ => return Err(Error::invalid("not a restripe job")),
        };
        let s = self
            .reshapes
            .get(&group)
            .ok_or_else(|| Error::not_found(format!("group {group} is not being restriped")))?;
        Ok(match (s.node, copy) {
            (Node::Establish(est), true) => {
                Box::new(move || Ok(Box::new(CopyWork { pool, group, est }) as Box<dyn Work>))
            }
            (Node::Reshape(node), false) => {
                Box::new(move || Ok(Box::new(TransferWork { pool, group, node }) as Box<dyn Work>))
            }
            _ => {
                return Err(Error::invalid(format!(
                    "job {} does not match the phase of group {group}'s restripe",
                    rec.id
                )));
            }
        })
    }

    /// Whether job `id` is the transfer of a restripe (which cannot be
    /// cancelled: the original disks are being overwritten).
    pub(in crate::engine) fn refuse_reshape_cancel(&self, id: u64) -> Result<()> {
        match self
            .reshapes
            .all()
            .into_iter()
            .find(|s| s.rec.job == id && s.rec.phase == ReshapePhase::Transfer)
        {
            Some(s) => Err(Error::conflict(format!(
                "job {id} moves group {}'s data into its new layout, over the original one: \
                 it cannot be undone; pause it (`ferrosan job pause {id}`) if it must wait",
                s.rec.group
            ))),
            None => Ok(()),
        }
    }
}

/// Whether two devices are the same node.
fn same(a: &Arc<dyn BlockDev>, b: &Arc<dyn BlockDev>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// The BCV's copy (step 104), then the switch (steps 113-120).
struct CopyWork {
    pool: Arc<Pool>,
    group: String,
    est: Arc<Establish>,
}

impl Work for CopyWork {
    fn step(&mut self, from: u64, n: u64) -> DevFuture<'_, Result<()>> {
        // After a restart the copy starts over (its cursor is not stored).
        let to = (from + n) * CHUNK;
        Box::pin(async move { self.est.copy(self.est.cursor(), to).await })
    }

    fn checkpoint(&mut self) -> DevFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn finish(&mut self) -> DevFuture<'_, Result<()>> {
        let group = self.group.clone();
        let pool = Arc::clone(&self.pool);
        Box::pin(async move {
            let est = Arc::clone(&self.est);
            if self.est.cursor() < self.est.size() {
                self.est.copy(self.est.cursor(), self.est.size()).await?;
            }
            pool.configure_async(
                move |p: Arc<Pool>| async move { p.reshape_switch(&group, est).await },
            )
            .await
        })
    }

    fn abort(&mut self, cancelled: bool) -> DevFuture<'_, Result<()>> {
        let group = self.group.clone();
        let pool = Arc::clone(&self.pool);
        Box::pin(async move {
            let why = if cancelled { "cancelled" } else { "failed" };
            pool.configure_async(
                move |p: Arc<Pool>| async move { p.reshape_abort(&group, why).await },
            )
            .await
        })
    }
}

/// The transfer (FIGS. 6A/6B), then the end (steps 121-124).
struct TransferWork {
    pool: Arc<Pool>,
    group: String,
    node: Arc<Reshape>,
}

impl Work for TransferWork {
    fn step(&mut self, from: u64, n: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            self.node.instant_split().await?;
            self.node.transfer_tracks(from, from + n).await
        })
    }

    fn step_bytes(&self) -> u64 {
        32 << 20
    }

    fn checkpoint(&mut self) -> DevFuture<'_, Result<()>> {
        Box::pin(self.node.save())
    }

    fn finish(&mut self) -> DevFuture<'_, Result<()>> {
        let group = self.group.clone();
        let pool = Arc::clone(&self.pool);
        Box::pin(async move {
            self.node.transfer_tracks(0, self.node.tracks()).await?;
            self.node.save().await?;
            pool.configure_async(move |p: Arc<Pool>| async move { p.reshape_end(&group).await })
                .await
        })
    }

    fn abort(&mut self, _cancelled: bool) -> DevFuture<'_, Result<()>> {
        // The session stays: the next start resumes the transfer.
        Box::pin(async { Ok(()) })
    }
}
