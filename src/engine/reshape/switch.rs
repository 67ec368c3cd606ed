//! The switch (seed 004, FIG. 4A steps 113-120), the end (steps
//! 121-124), an abort before the switch, and the restart of a restripe
//! from its record.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use super::{Node, Session};
use crate::blockdev::{BlockDev, NoIntent, WriteIntent};
use crate::engine::Pool;
use crate::engine::groups::layout_level;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::meta::diffmap::DiffMap;
use crate::meta::model::reshape::{ReshapePhase, ReshapeRecord};
use crate::meta::model::{GroupRecord, JobKind, SlotRecord, SlotState};
use crate::reshape::{Establish, Lists, Reshape};
use crate::stack::raid::{MemberState, NoHooks, RaidDev};
use crate::stack::switch::Switch;
use crate::stack::volume::VolumeDev;

impl Pool {
    /// The group's RAID node, as a device.
    pub(super) fn group_raid(&self, group: &str) -> Result<Arc<dyn BlockDev>> {
        let st = self.group_entry_locked(group)?;
        Ok(st.groups[group].raid.clone())
    }

    /// The BCV: the original layout over the BCV disks (no write-intent
    /// log: after a crash its copy starts over; no hooks: a BCV disk that
    /// fails degrades the copy, not the group).
    pub(super) fn reshape_bcv(&self, rec: &ReshapeRecord) -> Result<Arc<RaidDev>> {
        let level = self.group_level(&rec.group)?;
        let layout = Layout::new(level, rec.old_stripe, &rec.old_member_sizes)?;
        let members = self.open_disks(&rec.bcv_disks)?;
        let states = vec![MemberState::Ok; members.len()];
        let intent: Arc<dyn WriteIntent> = Arc::new(NoIntent);
        Ok(Arc::new(RaidDev::new(
            layout,
            members,
            states,
            intent,
            Arc::new(NoHooks),
        )?))
    }

    fn group_level(&self, group: &str) -> Result<crate::layout::RaidLevel> {
        let st = self.group_entry_locked(group)?;
        Ok(layout_level(st.groups[group].rec.level))
    }

    fn open_disks(&self, names: &[String]) -> Result<Vec<Option<Arc<dyn BlockDev>>>> {
        let st = self.lock();
        names
            .iter()
            .map(|d| {
                st.disks
                    .get(d)
                    .and_then(|e| e.open.as_ref())
                    .map(|o| Some(Arc::clone(&o.dev)))
                    .ok_or_else(|| Error::not_found(format!("disk {d} of a restripe is not open")))
            })
            .collect()
    }

    /// Each volume of `group`: its gate (the switch NBD serves) and its
    /// mapping onto the group.
    fn group_volumes(&self, group: &str) -> Vec<(Arc<Switch>, Arc<VolumeDev>)> {
        self.lock()
            .volumes
            .values()
            .filter(|v| v.rec.group == group)
            .map(|v| (Arc::clone(&v.dev), Arc::clone(&v.thick)))
            .collect()
    }

    /// Puts every volume of `group` onto `dev`, each behind its closed
    /// gate (requests in flight end first; new ones wait). Returns how
    /// long the gates were closed.
    pub(super) async fn retarget(
        &self,
        group: &str,
        dev: Arc<dyn BlockDev>,
    ) -> std::time::Duration {
        let vols = self.group_volumes(group);
        let t0 = Instant::now();
        let mut closed = Vec::with_capacity(vols.len());
        for (sw, _) in &vols {
            closed.push(sw.close().await);
        }
        for (_, thick) in &vols {
            thick.set_group(Arc::clone(&dev));
        }
        drop(closed);
        t0.elapsed()
    }

    /// The lists of `rec`'s session, opened from their pages.
    fn reshape_lists(&self, rec: &ReshapeRecord, new_size: u64) -> Result<Lists> {
        let open = |object: u64, bytes: u64| {
            DiffMap::open(
                Arc::clone(&self.meta),
                object,
                rec.track,
                bytes.div_ceil(rec.track),
            )
        };
        Ok(Lists {
            pb: open(rec.pb, rec.old_size)?,
            ind: open(rec.ind, new_size)?,
            ps: open(rec.ps, rec.old_size)?,
        })
    }

    /// The group record of the new layout: the added disks as new slots.
    fn reshape_group_record(&self, rec: &ReshapeRecord) -> Result<GroupRecord> {
        let st = self.group_entry_locked(&rec.group)?;
        let mut g = st.groups[&rec.group].rec.clone();
        g.stripe_size = rec.new_stripe;
        g.slots.extend(rec.added.iter().map(|d| SlotRecord {
            failed_seq: 0,
            disk: Some(d.clone()),
            state: SlotState::Ok,
        }));
        g.member_sizes = rec.new_member_sizes.clone();
        Ok(g)
    }

    /// The switch: the BCV is in sync; the lists are made and the new
    /// layout's nodes built outside the pause; then, with every volume of
    /// the group behind its closed gate, one commit stores the new
    /// layout and the session's phase, and the volumes go onto the
    /// Reshape node. No data moves in the pause (steps 114-120).
    pub(super) async fn reshape_switch(&self, group: &str, est: Arc<Establish>) -> Result<()> {
        let s = self
            .reshapes
            .get(group)
            .ok_or_else(|| Error::not_found(format!("group {group} is not being restriped")))?;
        if let Some(e) = est.broken() {
            return Err(e.context("the restripe's copy stopped"));
        }
        let bcv = s.bcv.clone();
        let grec = self.reshape_group_record(&s.rec)?;
        let entry = {
            let st = self.lock();
            let intent = st.groups.get(group).and_then(|g| g.intent.clone());
            self.assemble_with(&st, &grec, &|_| None, &[], intent)?
        };
        let new_size = entry.raid.size();
        // Steps 106, 111, 112: every bit set, stored before the switch.
        let lists = self.reshape_lists(&s.rec, new_size)?;
        for m in [&lists.pb, &lists.ind, &lists.ps] {
            if let Some(stored) = m.mark_tracks(0..m.tracks()) {
                stored.await?;
            }
        }
        let node = Arc::new(Reshape::new(
            entry.raid.clone(),
            bcv.clone(),
            s.rec.old_size,
            lists,
        )?);
        let kind = JobKind::ReshapeTransfer {
            group: group.to_string(),
        };
        let job = self.store_new_job(kind, node.tracks(), s.rec.track, 0)?;
        let mut rec = ReshapeRecord {
            phase: ReshapePhase::Transfer,
            job: job.id,
            ..s.rec.clone()
        };
        let vols = self.group_volumes(group);
        // The pause.
        let t0 = Instant::now();
        let mut closed = Vec::with_capacity(vols.len());
        for (sw, _) in &vols {
            closed.push(sw.close().await);
        }
        self.meta.write(true, |tx| {
            tx.put_group(&grec)?;
            tx.put_reshape(&rec)
        })?;
        for (_, thick) in &vols {
            thick.set_group(node.clone());
        }
        if let Some(g) = self.lock().groups.get_mut(group) {
            *g = entry;
        }
        drop(closed);
        let pause = t0.elapsed();
        rec.pause_us = u64::try_from(pause.as_micros()).unwrap_or(u64::MAX);
        self.meta.write(false, |tx| tx.put_reshape(&rec))?;
        tracing::info!(
            "group {group}: switched to the new layout ({} bytes) with host I/O paused {:.3} ms",
            new_size,
            pause.as_secs_f64() * 1e3
        );
        self.reshapes.put(Session {
            rec,
            node: Node::Reshape(Arc::clone(&node)),
            bcv,
        });
        let make = self.reshape_work(&job)?;
        self.jobs.start(job, make);
        Ok(())
    }

    /// The end (steps 121-124): every track is in its new place and its
    /// bits are stored clear; the volumes go onto the new RAID node, the
    /// session and its lists are deleted, the BCV's disks are free.
    pub(super) async fn reshape_end(&self, group: &str) -> Result<()> {
        let Some(s) = self.reshapes.get(group) else {
            return Ok(());
        };
        if let Node::Reshape(n) = &s.node
            && n.left() > 0
        {
            return Err(Error::invalid(format!(
                "group {group}'s restripe has {} tracks left to move",
                n.left()
            )));
        }
        let raid = self.group_raid(group)?;
        self.retarget(group, raid).await;
        self.meta.write(true, |tx| {
            for o in [s.rec.pb, s.rec.ind, s.rec.ps] {
                tx.del_pages(o)?;
            }
            tx.del_reshape(group)
        })?;
        self.reshapes.remove(group);
        tracing::info!(
            "group {group}: restripe done; disks {} are free",
            s.rec.bcv_disks.join(", ")
        );
        Ok(())
    }

    /// Ends a restripe before its switch (its copy cancelled or failed):
    /// the volumes go back onto the group's RAID node, the original layout
    /// never changed.
    pub(super) async fn reshape_abort(&self, group: &str, why: &str) -> Result<()> {
        let Some(s) = self.reshapes.get(group) else {
            return Ok(());
        };
        if s.rec.phase != ReshapePhase::Establish {
            return Ok(());
        }
        let raid = self.group_raid(group)?;
        self.retarget(group, raid).await;
        self.meta.write(true, |tx| tx.del_reshape(group))?;
        self.reshapes.remove(group);
        tracing::warn!("group {group}: restripe {why} before its switch; the layout is unchanged");
        Ok(())
    }

    /// Puts back the restripes stored, before any host connects or any
    /// job resumes: an Establish node whose copy starts over, or the
    /// Reshape node from its stored lists.
    pub(in crate::engine) fn reshape_load(&self) -> Result<()> {
        for rec in self.meta.reshapes()? {
            let group = rec.group.clone();
            if let Err(e) = self.reshape_load_one(rec) {
                self.problem(format!(
                    "group {group}: its restripe cannot resume: {}",
                    e.chain()
                ));
            }
        }
        Ok(())
    }

    fn reshape_load_one(&self, rec: ReshapeRecord) -> Result<()> {
        let group = rec.group.clone();
        let bcv = self.reshape_bcv(&rec)?;
        let raid = self.group_raid(&group)?;
        let (node, dev): (Node, Arc<dyn BlockDev>) = match rec.phase {
            ReshapePhase::Establish => {
                let est = Arc::new(Establish::new(raid, bcv.clone())?);
                (Node::Establish(Arc::clone(&est)), est)
            }
            ReshapePhase::Transfer => {
                let lists = self.reshape_lists(&rec, raid.size())?;
                let n = Arc::new(Reshape::new(raid, bcv.clone(), rec.old_size, lists)?);
                (Node::Reshape(Arc::clone(&n)), n)
            }
        };
        // No host is connected yet: no gate to close.
        for v in self
            .lock()
            .volumes
            .values()
            .filter(|v| v.rec.group == group)
        {
            v.thick.set_group(Arc::clone(&dev));
        }
        self.reshapes.put(Session { rec, node, bcv });
        Ok(())
    }
}
