//! S-VOL groups, the engine's service (seed 003, FIG. 8-13; S-VOL group
//! setting unit 610, group management unit 620 with table 900, S-VOL
//! management unit 630 with table 1200; the data path, units 640 and
//! 650, is `crate::pair::group`).
//!
//! ```text
//!   svol-group create (opcode 0): members checked (S-VOLs of the P-VOL in
//!       PAIR; spares unpaired, the same size) ─> RW members' increments
//!       volumes (DLV) made ─> the members' pairs split at one instant
//!       ─> record (tables 900/1200/1300) ─> gates of every LID closed,
//!       nodes in (members: GroupDev; spares, DLVs: Internal) ─> open
//!   svol-group query (opcode 3): the tables, Freq, health, spares
//!   svol-group delete: nodes out, record and DLVs gone; the members go
//!       on as split S-VOLs of their pairs
//! ```
//!
//! The service's lock is a leaf, never held across an await or a commit.
//! A member's pair stays SPLIT under the group (its bitmap keeps counting
//! what differs from the P-VOL); pair commands on it, and deleting or
//! growing any LID of a group, are refused naming the group.

#![forbid(unsafe_code)]

mod create;
mod dlv;
mod load;
mod recover;
mod topvol;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::views::{
    SvolAttr, SvolGroupInfo, SvolMemberInfo, Table900Row, Table1200Row, Table1300,
};
use crate::blockdev::BlockDev;
use crate::error::{Error, Result};
use crate::meta::intent::PersistentIntent;
use crate::meta::model::SvolGroupRecord;
use crate::pair::group::{Group, Internal};
use crate::stack::switch::Switch;

use super::Pool;

/// Block ids table 1300 lists at most.
const MAX_BIDS: usize = 1000;

/// One group as it runs.
pub(crate) struct SvolEntry {
    rec: SvolGroupRecord,
    group: Arc<Group>,
    /// The RW members' write-intent logs, by member index.
    logs: Vec<(usize, Arc<PersistentIntent>)>,
    /// The fill or rollback job running, if any.
    job: Option<u64>,
}

/// The S-VOL groups of the pool, by name.
#[derive(Default)]
pub(crate) struct SvolGroups {
    st: parking_lot::Mutex<BTreeMap<String, SvolEntry>>,
}

impl SvolGroups {
    fn add(
        &self,
        rec: SvolGroupRecord,
        group: Arc<Group>,
        logs: Vec<(usize, Arc<PersistentIntent>)>,
    ) {
        let name = rec.name.clone();
        self.st.lock().insert(
            name,
            SvolEntry {
                rec,
                group,
                logs,
                job: None,
            },
        );
    }

    fn unknown(name: &str) -> Error {
        Error::not_found(format!(
            "no S-VOL group {name}: see `ferrosan svol-group list`"
        ))
    }

    /// A group's record.
    fn record(&self, name: &str) -> Result<SvolGroupRecord> {
        self.st
            .lock()
            .get(name)
            .map(|e| e.rec.clone())
            .ok_or_else(|| Self::unknown(name))
    }

    /// Changes group `name`'s record in memory with `f`, under the
    /// service's lock (the record stays as it was if `f` fails). Stored by
    /// [`Pool::svol_update`].
    fn change<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut SvolGroupRecord) -> Result<T>,
    ) -> Result<T> {
        let mut st = self.st.lock();
        let e = st.get_mut(name).ok_or_else(|| Self::unknown(name))?;
        let mut rec = e.rec.clone();
        let out = f(&mut rec)?;
        e.rec = rec;
        Ok(out)
    }

    /// The job running for a group.
    fn job(&self, name: &str) -> Option<u64> {
        self.st.lock().get(name).and_then(|e| e.job)
    }

    /// Claims group `name` for a job about to start (one job a group at
    /// a time): refused if one runs.
    fn claim_job(&self, name: &str) -> Result<()> {
        let mut st = self.st.lock();
        let e = st.get_mut(name).ok_or_else(|| Self::unknown(name))?;
        if let Some(j) = e.job {
            return Err(Error::conflict(format!(
                "S-VOL group {name} runs job {j} already: `ferrosan job wait {j}`"
            )));
        }
        e.job = Some(u64::MAX);
        Ok(())
    }

    fn set_job(&self, name: &str, job: Option<u64>) {
        if let Some(e) = self.st.lock().get_mut(name) {
            e.job = job;
        }
    }

    /// A group's data path and block size.
    fn running(&self, name: &str) -> Result<(Arc<Group>, u64)> {
        self.st
            .lock()
            .get(name)
            .map(|e| (Arc::clone(&e.group), e.rec.block))
            .ok_or_else(|| Self::unknown(name))
    }

    /// Whether an S-VOL group job of `name` resumes after a restart.
    pub(crate) fn resumes(&self, name: &str) -> bool {
        self.st.lock().get(name).is_some_and(|e| e.job.is_none())
    }

    /// The group volume `name` is a LID of (member, spare or DLV), if any.
    pub(crate) fn of_volume(&self, name: &str) -> Option<String> {
        self.st
            .lock()
            .values()
            .find(|e| {
                e.rec
                    .members
                    .iter()
                    .any(|m| m.lid == name || m.pid == name || m.rlid.as_deref() == Some(name))
            })
            .map(|e| e.rec.name.clone())
    }

    /// Why `what` cannot be done to volume `name` while it is in a group.
    pub(crate) fn refuse_member(&self, name: &str, what: &str) -> Result<()> {
        match self.of_volume(name) {
            Some(g) => Err(Error::conflict(format!(
                "volume {name} is in S-VOL group {g}: it cannot be {what} while it is; delete the group first (`ferrosan svol-group delete {g}`)"
            ))),
            None => Ok(()),
        }
    }

    /// Whether hosts may open volume `name`, and read-only if so: RO
    /// members are read-only exports, spares and DLVs are not exports.
    pub(crate) fn access(&self, name: &str) -> Result<Option<bool>> {
        let st = self.st.lock();
        // A LID is its own export, whatever storage holds it now.
        for e in st.values() {
            if let Some(m) = e.rec.members.iter().find(|m| m.lid == name) {
                return match m.attr {
                    SvolAttr::Spare => Err(not_host(name, &e.rec.name, "a spare")),
                    SvolAttr::Ro => Ok(Some(true)),
                    SvolAttr::Rw => Ok(Some(false)),
                };
            }
        }
        for e in st.values() {
            for m in &e.rec.members {
                if m.rlid.as_deref() == Some(name) {
                    return Err(not_host(name, &e.rec.name, "the increments volume (DLV)"));
                }
                if m.pid == name {
                    // A spare that filled a LID: its storage is that LID's.
                    return Err(not_host(
                        name,
                        &e.rec.name,
                        &format!("the physical volume of {}", m.lid),
                    ));
                }
            }
        }
        Ok(None)
    }
}

fn not_host(name: &str, group: &str, what: &str) -> Error {
    Error::conflict(format!(
        "volume {name} is {what} of S-VOL group {group}: it is not host-accessible (see `ferrosan svol-group query {group}`)"
    ))
}

impl Pool {
    /// Changes group `name`'s record with `f` and stores it, with `also`
    /// in the same commit. The commit writes the record as it is when the
    /// commit runs (the pool database runs one write at a time), so two
    /// changes made at once — the data path's and a command's or a job's
    /// — are both stored, whichever commits last.
    pub(in crate::engine) fn svol_update<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut SvolGroupRecord) -> Result<T>,
        also: impl FnOnce(&mut crate::meta::Tx<'_>) -> Result<()>,
    ) -> Result<T> {
        let out = self.svols.change(name, f)?;
        self.meta.write(true, |tx| {
            tx.put_svol_group(&self.svols.record(name)?)?;
            also(tx)
        })?;
        Ok(out)
    }

    pub fn svol_group_list(&self) -> Vec<SvolGroupInfo> {
        let names: Vec<String> = self.svols.st.lock().keys().cloned().collect();
        names
            .iter()
            .filter_map(|n| self.svol_group_query(n).ok())
            .collect()
    }

    /// Operation code 3: the group's tables, members and spares.
    pub fn svol_group_query(&self, name: &str) -> Result<SvolGroupInfo> {
        let (rec, group, job) = self
            .svols
            .st
            .lock()
            .get(name)
            .map(|e| (e.rec.clone(), Arc::clone(&e.group), e.job))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "no S-VOL group {name}: see `ferrosan svol-group list`"
                ))
            })?;
        let mut members = Vec::new();
        let mut spares = Vec::new();
        let mut t900 = Vec::new();
        let mut t1200 = Vec::new();
        let mut t1300 = Vec::new();
        for m in &rec.members {
            let live = group.members.iter().find(|x| x.lid == m.lid);
            let freq = live.map_or(0, |x| x.freq());
            let failed = m.failed || live.is_some_and(|x| x.failed());
            let health = match (m.attr, failed) {
                (_, true) => "failed",
                (SvolAttr::Spare, false) => "spare",
                _ if m.dlv_failed => "dlv-failed",
                _ => "healthy",
            };
            let info = SvolMemberInfo {
                lid: m.lid.clone(),
                attr: m.attr,
                pid: m.pid.clone(),
                rlid: m.rlid.clone(),
                freq,
                health: health.to_string(),
                errors: live.map_or(0, |x| x.errors()),
                repaired: live.map_or(0, |x| x.repaired()),
                disks: self.volume_disks(&m.pid),
            };
            let attr = match m.attr {
                SvolAttr::Spare => "RO",
                a => a.name(),
            };
            t900.push(Table900Row {
                grp_id: rec.name.clone(),
                lid: m.lid.clone(),
                attr: attr.to_string(),
                pid: m.pid.clone(),
                rlid: m.rlid.clone(),
            });
            t1200.push(Table1200Row {
                lid: m.lid.clone(),
                attr: match m.attr {
                    SvolAttr::Spare => "—".to_string(),
                    a => a.name().to_string(),
                },
                pid: m.pid.clone(),
                rlid: m.rlid.clone(),
                freq,
            });
            if m.attr == SvolAttr::Spare {
                spares.push(info);
            } else {
                members.push(info);
            }
        }
        // The increments volumes: rows of their own (internal, RW).
        for m in &rec.members {
            let Some(dlv) = &m.rlid else { continue };
            t900.push(Table900Row {
                grp_id: rec.name.clone(),
                lid: dlv.clone(),
                attr: "RW".to_string(),
                pid: dlv.clone(),
                rlid: None,
            });
            t1200.push(Table1200Row {
                lid: dlv.clone(),
                attr: "RW".to_string(),
                pid: dlv.clone(),
                rlid: None,
                freq: 0,
            });
            if let Some(incr) = group
                .members
                .iter()
                .find(|x| x.lid == m.lid)
                .and_then(|x| x.incr.as_ref())
            {
                t1300.push(table_1300(dlv, &incr.bids));
            }
        }
        // A failed member with no spare left, or an RW member that lost
        // its increments volume (it cannot be taken over).
        let degraded = (members.iter().any(|m| m.health == "failed") && spares.is_empty())
            || members.iter().any(|m| m.health == "dlv-failed");
        Ok(SvolGroupInfo {
            name: rec.name.clone(),
            pvol: rec.pvol.clone(),
            split_at: rec.split_at,
            members,
            spares,
            degraded,
            // A copy onto the P-VOL runs as its pair's job.
            job: job.or_else(|| {
                let tp = rec.to_pvol.as_ref()?;
                self.pair_get(None, &tp.svol).ok()?.job
            }),
            to_pvol: rec.to_pvol.as_ref().map(|t| t.lid.clone()),
            table_900: t900,
            table_1200: t1200,
            table_1300: t1300,
        })
    }

    /// The disks of volume `name`'s group.
    fn volume_disks(&self, name: &str) -> Vec<String> {
        let st = self.lock();
        st.volumes
            .get(name)
            .and_then(|v| st.groups.get(&v.rec.group))
            .map(|g| g.rec.slots.iter().filter_map(|s| s.disk.clone()).collect())
            .unwrap_or_default()
    }

    /// The switch of volume `name`.
    fn volume_switch(&self, name: &str) -> Result<Arc<Switch>> {
        self.lock()
            .volumes
            .get(name)
            .map(|v| Arc::clone(&v.dev))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "unknown volume {name:?}: see `ferrosan volume list`"
                ))
            })
    }

    /// Deletes a group: every LID's node comes out (members go on as the
    /// split S-VOLs of their pairs, writable again), the record and the
    /// increments volumes go.
    pub async fn svol_group_delete(&self, name: &str) -> Result<()> {
        let pool = self.arc()?;
        let name = name.to_string();
        self.workers
            .run(move || async move { pool.svol_delete_on_worker(&name).await })
            .await??;
        Ok(())
    }

    async fn svol_delete_on_worker(&self, name: &str) -> Result<()> {
        let rec = self
            .svols
            .st
            .lock()
            .get(name)
            .map(|e| e.rec.clone())
            .ok_or_else(|| {
                Error::not_found(format!(
                    "no S-VOL group {name}: see `ferrosan svol-group list`"
                ))
            })?;
        if let Some(tp) = &rec.to_pvol {
            return Err(Error::conflict(format!(
                "S-VOL group {name} is copying {}'s image onto {}: wait for it (`ferrosan svol-group query {name}`), then delete the group",
                tp.lid, rec.pvol
            )));
        }
        let lids = lids(&rec);
        let switches: Vec<Arc<Switch>> = lids
            .iter()
            .map(|l| self.volume_switch(l))
            .collect::<Result<_>>()?;
        let mut closed = Vec::with_capacity(switches.len());
        for sw in &switches {
            closed.push(sw.close().await);
        }
        for sw in &switches {
            sw.current().flush().await?;
        }
        let saved = rec.clone();
        self.meta.write(true, |tx| tx.del_svol_group(&saved))?;
        for sw in &switches {
            sw.set(below(&sw.current()));
        }
        self.svols.st.lock().remove(name);
        drop(closed);
        for dlv in rec.members.iter().filter_map(|m| m.rlid.as_ref()) {
            if let Err(e) = self.volume_delete(dlv, true).await {
                tracing::warn!(
                    "S-VOL group {name}: its increments volume {dlv} was not deleted: {}",
                    e.chain()
                );
            }
        }
        tracing::info!("S-VOL group {name} deleted");
        Ok(())
    }

    /// Puts the group's nodes over its LIDs' switches (gates closed by the
    /// caller): members get theirs, spares and DLVs an [`Internal`] one.
    fn svol_nodes(&self, rec: &SvolGroupRecord, group: &Arc<Group>) -> Result<()> {
        for m in &rec.members {
            let sw = self.volume_switch(&m.lid)?;
            match group.members.iter().position(|x| x.lid == m.lid) {
                Some(i) => sw.set(group.node(i, sw.current())),
                None => sw.set(internal(sw.current(), &m.lid, &rec.name, "a spare")),
            }
            if let Some(dlv) = &m.rlid {
                let sw = self.volume_switch(dlv)?;
                sw.set(internal(
                    sw.current(),
                    dlv,
                    &rec.name,
                    "the increments volume (DLV)",
                ));
            }
        }
        Ok(())
    }
}

/// Every volume of a group: LIDs (members, spares), DLVs, and PIDs that
/// are not LIDs (a spare that filled a LID), each once.
fn lids(rec: &SvolGroupRecord) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in &rec.members {
        for v in [Some(&m.lid), Some(&m.pid), m.rlid.as_ref()]
            .into_iter()
            .flatten()
        {
            if !v.is_empty() && !out.contains(v) {
                out.push(v.clone());
            }
        }
    }
    out
}

fn internal(below: Arc<dyn BlockDev>, lid: &str, group: &str, what: &str) -> Arc<dyn BlockDev> {
    Arc::new(Internal {
        below,
        why: format!(
            "volume {lid} is {what} of S-VOL group {group}: not host-accessible (see `ferrosan svol-group query {group}`)"
        ),
    })
}

/// What a group's node over a switch had below it.
fn below(node: &Arc<dyn BlockDev>) -> Arc<dyn BlockDev> {
    if let Some(i) = node.as_any().downcast_ref::<Internal>() {
        return Arc::clone(&i.below);
    }
    if let Some(g) = node.as_any().downcast_ref::<crate::pair::group::GroupDev>() {
        return g.below();
    }
    Arc::clone(node)
}

fn table_1300(dlv: &str, bids: &crate::meta::diffmap::DiffMap) -> Table1300 {
    let mut out = Vec::new();
    let mut t = 0;
    while out.len() < MAX_BIDS {
        let Some(n) = bids.next_set(t) else { break };
        out.push(n);
        t = n + 1;
    }
    Table1300 {
        dlid: dlv.to_string(),
        block_size: bids.track(),
        bids: out,
        count: bids.count(),
    }
}

impl Pool {
    /// Whether hosts may open volume `name` (spares and increments
    /// volumes of S-VOL groups they may not).
    pub fn host_accessible(&self, name: &str) -> bool {
        self.svols.access(name).is_ok() && self.work_volume_refusal(name).is_none()
    }
}
