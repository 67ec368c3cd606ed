//! Opening a pool's S-VOL groups (after its pairs): each group's nodes go
//! back over its LIDs; regions an RW member's write-intent log had marked
//! at a crash (written to the member and perhaps not its DLV) are copied
//! member to DLV in the background, their block ids in table 1300 first.
//! Also the periodic and the clean-stop clearing of those logs.

use std::sync::Arc;

use crate::engine::Pool;
use crate::error::Result;
use crate::meta::intent::PersistentIntent;
use crate::pair::group::Group;

impl Pool {
    /// Assembles every recorded group. A group that cannot be assembled
    /// stops all its LIDs from being served (an RO member served alone
    /// would take writes) and is reported as a problem.
    pub(in crate::engine) fn load_svol_groups(&self) -> Result<()> {
        for rec in self.meta.svol_groups()? {
            let built = match self.build_group(&rec) {
                Ok(b) => b,
                Err(e) => {
                    self.problem(format!(
                        "S-VOL group {} cannot be assembled: {}; none of its volumes is served",
                        rec.name,
                        e.chain()
                    ));
                    let st = self.lock();
                    for l in super::lids(&rec) {
                        if let Some(v) = st.volumes.get(&l) {
                            v.dev.revoke();
                        }
                    }
                    continue;
                }
            };
            self.svol_nodes(&rec, &built.group)?;
            for (i, regions) in built.marked {
                let log = built
                    .logs
                    .iter()
                    .find(|(j, _)| *j == i)
                    .map(|(_, l)| Arc::clone(l));
                if let Some(log) = log {
                    self.resync_dlvs_later(Arc::clone(&built.group), i, log, regions);
                }
            }
            let group = Arc::clone(&built.group);
            self.svols.add(rec.clone(), built.group, built.logs);
            if let Err(e) = self.load_to_pvol(&rec, &group) {
                self.problem(format!(
                    "S-VOL group {}: its restore of {} cannot go on: {}",
                    rec.name,
                    rec.pvol,
                    e.chain()
                ));
            }
        }
        Ok(())
    }

    /// Copies the marked regions member to DLV on a worker, releasing each
    /// mark once its copy is durable.
    fn resync_dlvs_later(
        &self,
        group: Arc<Group>,
        me: usize,
        log: Arc<PersistentIntent>,
        regions: Vec<(u64, u64)>,
    ) {
        tracing::warn!(
            "S-VOL group {}: {} regions of RW member {} were being written at the last stop; its increments volume is brought back to it",
            group.name,
            regions.len(),
            group.members[me].lid
        );
        self.workers.spawn(move || async move {
            for (off, len) in regions {
                match group.resync_dlv(me, off, len).await {
                    Ok(()) => log.release(off, len),
                    Err(e) => tracing::error!(
                        "S-VOL group {}: bringing the increments volume back at {off}+{len} failed: {}; it is retried at the next start",
                        group.name,
                        e.chain()
                    ),
                }
            }
        });
    }

    /// Every group's write-intent logs with their group.
    fn svol_logs(&self) -> Vec<(Arc<Group>, Arc<PersistentIntent>)> {
        self.svols
            .st
            .lock()
            .values()
            .flat_map(|e| {
                e.logs
                    .iter()
                    .map(|(_, l)| (Arc::clone(&e.group), Arc::clone(l)))
            })
            .collect()
    }

    /// Clears idle write-intent regions of every RW member (the periodic
    /// pass).
    pub(in crate::engine) async fn clear_svol_intents(&self) {
        for (group, log) in self.svol_logs() {
            if let Err(e) = log
                .clear_idle(Box::pin(async move { group.flush_all().await }))
                .await
            {
                tracing::warn!(
                    "clearing an S-VOL group's write-intent marks failed: {}",
                    e.chain()
                );
            }
        }
    }

    /// At a clean stop: every RW member's marks cleared once its group is
    /// flushed.
    pub(in crate::engine) async fn clear_svol_intents_at_stop(&self) -> Result<()> {
        let mut first = None;
        for (group, log) in self.svol_logs() {
            if let Err(e) = log
                .clear_quiesced(Box::pin(async move { group.flush_all().await }))
                .await
            {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}
