//! `svol-group create` (seed 003, operation code 0, S-VOL group
//! initialisation; FIG. 8B and 10; SEED-SPECS C.c.1): the attribute list
//! checked, an increments volume (DLV) made for every RW member, the
//! members split from the P-VOL at one instant (so every RO member holds
//! the same image), tables 900, 1200 and 1300 recorded.

use std::sync::Arc;

use super::lids;
use crate::api::views::{SvolAttr, SvolGroupCreateRequest, SvolGroupInfo, VolumeCreateRequest};
use crate::engine::{Pool, check_name};
use crate::error::{Error, Result};
use crate::meta::diffmap::DiffMap;
use crate::meta::intent::{IntentHandle, PersistentIntent};
use crate::meta::model::{SvolGroupRecord, SvolMemberRecord, now};
use crate::pair::group::{Group, Increments, Member};

/// Smallest region of an RW member's write-intent log.
const MIN_INTENT_REGION: u64 = 1 << 20;

impl Pool {
    pub async fn svol_group_create(&self, req: SvolGroupCreateRequest) -> Result<SvolGroupInfo> {
        check_name("S-VOL group", &req.name)?;
        let block = self.svol_check(&req)?;
        let pool = self.arc()?;
        let name = req.name.clone();
        self.workers
            .run(move || async move { pool.svol_create_on_worker(req, block).await })
            .await??;
        self.svol_group_query(&name)
    }

    /// Checks the attribute list (SEED-SPECS C.c.1 step 2); returns the
    /// block size (the P-VOL's track).
    fn svol_check(&self, req: &SvolGroupCreateRequest) -> Result<u64> {
        if self.svols.st.lock().contains_key(&req.name) {
            return Err(Error::conflict(format!(
                "S-VOL group {} exists already",
                req.name
            )));
        }
        if !req.members.iter().any(|m| m.attr == SvolAttr::Ro) {
            return Err(Error::invalid(
                "an S-VOL group needs at least one RO member (--member LV:ro): its reads and repairs come from them",
            ));
        }
        let (size, block) = self.volume_size_track(&req.pvol)?;
        for (i, m) in req.members.iter().enumerate() {
            if req.members[..i].iter().any(|x| x.lid == m.lid) || m.lid == req.pvol {
                return Err(Error::invalid(format!("volume {} is named twice", m.lid)));
            }
            self.svols
                .refuse_member(&m.lid, "put in another S-VOL group")?;
            let (s, _) = self.volume_size_track(&m.lid)?;
            if s != size {
                return Err(Error::invalid(format!(
                    "volume {} is {s} bytes, P-VOL {} is {size}: every LID of a group is the P-VOL's size",
                    m.lid, req.pvol
                )));
            }
            let pair = self.pairs.of_volume(&m.lid);
            match (m.attr, pair) {
                (SvolAttr::Spare, None) => {}
                (SvolAttr::Spare, Some((p, s))) => {
                    return Err(Error::conflict(format!(
                        "spare {} is in pair {p} -> {s}: a spare is an unpaired volume; `ferrosan pair delete {p} {s}` first",
                        m.lid
                    )));
                }
                (_, Some((p, s))) if p == req.pvol && s == m.lid => {}
                _ => {
                    return Err(Error::invalid(format!(
                        "member {} is not an S-VOL of {}: pair it first (`ferrosan pair create {} {} --wait`)",
                        m.lid, req.pvol, req.pvol, m.lid
                    )));
                }
            }
            if m.attr != SvolAttr::Rw {
                continue;
            }
            let dlv = dlv_name(&m.lid);
            if self.lock().volumes.contains_key(&dlv) {
                return Err(Error::conflict(format!(
                    "volume {dlv} exists: it is the name of RW member {}'s increments volume; rename or delete it",
                    m.lid
                )));
            }
        }
        Ok(block)
    }

    /// A volume's size and track size.
    pub(super) fn volume_size_track(&self, name: &str) -> Result<(u64, u64)> {
        self.lock()
            .volumes
            .get(name)
            .map(|v| (v.rec.size, v.rec.track_size))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "unknown volume {name:?}: see `ferrosan volume list`"
                ))
            })
    }

    async fn svol_create_on_worker(
        self: Arc<Self>,
        req: SvolGroupCreateRequest,
        block: u64,
    ) -> Result<()> {
        let dlvs = self.make_dlvs(&req, block).await?;
        let members: Vec<String> = req
            .members
            .iter()
            .filter(|m| m.attr != SvolAttr::Spare)
            .map(|m| m.lid.clone())
            .collect();
        let split_at = match Arc::clone(&self).split_for_group(&req.pvol, &members).await {
            Ok(at) => at,
            Err(e) => {
                self.drop_dlvs(&dlvs).await;
                return Err(e);
            }
        };
        let rec = SvolGroupRecord {
            name: req.name.clone(),
            pvol: req.pvol.clone(),
            members: req
                .members
                .iter()
                .map(|m| {
                    let rw = m.attr == SvolAttr::Rw;
                    SvolMemberRecord {
                        lid: m.lid.clone(),
                        attr: m.attr,
                        pid: m.lid.clone(),
                        rlid: rw.then(|| dlv_name(&m.lid)),
                        bids: rw.then(|| self.next_object()),
                        intent: rw.then(|| self.next_object()),
                        failed: false,
                        dlv_failed: false,
                    }
                })
                .collect(),
            block,
            split_at,
            created: now(),
            to_pvol: None,
        };
        let built = self.build_group(&rec);
        let built = match built {
            Ok(b) => b,
            Err(e) => {
                self.drop_dlvs(&dlvs).await;
                return Err(e);
            }
        };
        let pool_rec = self.pool_record();
        let saved = rec.clone();
        self.meta.write(true, |tx| {
            tx.put_pool(&pool_rec)?;
            tx.put_svol_group(&saved)
        })?;
        self.svol_install(rec, built).await?;
        tracing::info!(
            "S-VOL group {} made of {} split from {}",
            req.name,
            members.join(", "),
            req.pvol
        );
        Ok(())
    }

    /// Closes every LID's gate, puts the nodes in, registers the group.
    pub(super) async fn svol_install(&self, rec: SvolGroupRecord, built: Built) -> Result<()> {
        let switches = lids(&rec)
            .iter()
            .map(|l| self.volume_switch(l))
            .collect::<Result<Vec<_>>>()?;
        let mut closed = Vec::with_capacity(switches.len());
        for sw in &switches {
            closed.push(sw.close().await);
        }
        self.svol_nodes(&rec, &built.group)?;
        self.svols.add(rec, built.group, built.logs);
        drop(closed);
        Ok(())
    }

    /// The increments volumes of the request's RW members.
    async fn make_dlvs(&self, req: &SvolGroupCreateRequest, block: u64) -> Result<Vec<String>> {
        let mut made = Vec::new();
        for m in req.members.iter().filter(|m| m.attr == SvolAttr::Rw) {
            let (size, group) = {
                let st = self.lock();
                let v = st
                    .volumes
                    .get(&m.lid)
                    .ok_or_else(|| Error::not_found(format!("volume {} is gone", m.lid)))?;
                (v.rec.size, v.rec.group.clone())
            };
            let r = self.volume_create(VolumeCreateRequest {
                name: dlv_name(&m.lid),
                group: req.dlv_group.clone().unwrap_or(group),
                size,
                track_size: Some(block),
                read_only: false,
            });
            match r {
                Ok(_) => made.push(dlv_name(&m.lid)),
                Err(e) => {
                    self.drop_dlvs(&made).await;
                    return Err(
                        e.context(format!("making RW member {}'s increments volume", m.lid))
                    );
                }
            }
        }
        Ok(made)
    }

    async fn drop_dlvs(&self, dlvs: &[String]) {
        for d in dlvs {
            if let Err(e) = self.volume_delete(d, true).await {
                tracing::warn!("increments volume {d} was not deleted: {}", e.chain());
            }
        }
    }

    /// The group's data path from its record: members over the devices
    /// their PIDs' switches hold now, RW members with their DLV, table
    /// 1300 and write-intent log. Also the regions each RW member's log
    /// had marked (written to the member and perhaps not the DLV).
    pub(super) fn build_group(&self, rec: &SvolGroupRecord) -> Result<Built> {
        let mut members = Vec::new();
        let mut marked = Vec::new();
        let mut logs = Vec::new();
        for m in &rec.members {
            if m.attr == SvolAttr::Spare {
                continue;
            }
            let (size, _) = self.volume_size_track(&m.lid)?;
            // A vacant LID (its PID took over the RW role) has none.
            let dev = match m.pid.as_str() {
                "" => None,
                pid => Some(self.volume_switch(pid)?.current()),
            };
            let incr = match (&m.rlid, m.bids, m.intent) {
                (Some(dlv), Some(bids), Some(intent)) => {
                    let dlv = self.volume_switch(dlv)?.current();
                    let tracks = size.div_ceil(rec.block.max(1));
                    let map = DiffMap::open(Arc::clone(&self.meta), bids, rec.block, tracks)?;
                    let (log, found) = PersistentIntent::load(
                        Arc::clone(&self.meta),
                        intent,
                        rec.block.max(MIN_INTENT_REGION),
                    )?;
                    if !found.is_empty() {
                        marked.push((members.len(), found));
                    }
                    logs.push((members.len(), Arc::clone(&log)));
                    let incr = Increments::new(dlv, map, Arc::new(IntentHandle(log)));
                    if m.dlv_failed {
                        incr.fail_dlv();
                        incr.set_failure_stored();
                    }
                    Some(incr)
                }
                _ => None,
            };
            let member = Member::new(m.lid.clone(), dev, size, incr);
            if m.failed {
                member.fail();
            }
            members.push(member);
        }
        Ok(Built {
            group: Group::new(rec.name.clone(), members, self.svol_hooks()?),
            logs,
            marked,
        })
    }
}

/// A group's data path as built from its record.
pub(super) struct Built {
    pub group: Arc<Group>,
    /// Each RW member's write-intent log, by member index.
    pub logs: Vec<(usize, Arc<PersistentIntent>)>,
    /// Regions those logs had marked at the start.
    pub marked: Vec<(usize, Vec<(u64, u64)>)>,
}

/// The name of RW member `lid`'s increments volume (seed: DLV2 of LV2).
fn dlv_name(lid: &str) -> String {
    format!("{lid}-dlv")
}
