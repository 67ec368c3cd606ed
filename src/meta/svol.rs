//! The S-VOL groups table: one JSON record per group, keyed by its name
//! ([`SvolGroupRecord`]).

#![forbid(unsafe_code)]

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::model::svol::SvolGroupRecord;
use super::{Meta, PAGES, Tx, db_err, decode, encode};
use crate::error::Result;

pub(super) const SVOL_GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("svol_groups");

impl Meta {
    /// Every S-VOL group's record, by name.
    pub fn svol_groups(&self) -> Result<Vec<SvolGroupRecord>> {
        let db = self.db()?;
        let txn = db
            .begin_read()
            .map_err(|e| db_err("a read transaction", e))?;
        let t = txn
            .open_table(SVOL_GROUPS)
            .map_err(|e| db_err("opening a table", e))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| db_err("a scan", e))? {
            let (k, v) = item.map_err(|e| db_err("a scan", e))?;
            out.push(decode("S-VOL group", k.value(), v.value())?);
        }
        Ok(out)
    }
}

impl Tx<'_> {
    pub fn put_svol_group(&mut self, g: &SvolGroupRecord) -> Result<()> {
        let bytes = encode(g)?;
        let mut t = self
            .txn
            .open_table(SVOL_GROUPS)
            .map_err(|e| db_err("opening a table", e))?;
        t.insert(g.name.as_str(), bytes.as_slice())
            .map_err(|e| db_err("a write", e))?;
        Ok(())
    }

    /// Deletes group `g`'s record and its members' increments maps and
    /// write-intent logs.
    pub fn del_svol_group(&mut self, g: &SvolGroupRecord) -> Result<()> {
        let mut t = self
            .txn
            .open_table(SVOL_GROUPS)
            .map_err(|e| db_err("opening a table", e))?;
        t.remove(g.name.as_str())
            .map_err(|e| db_err("a delete", e))?;
        drop(t);
        let mut pages = self
            .txn
            .open_table(PAGES)
            .map_err(|e| db_err("opening a table", e))?;
        let objects = g
            .members
            .iter()
            .flat_map(|m| m.bids.into_iter().chain(m.intent));
        for object in objects {
            pages
                .retain_in((object, 0)..=(object, u64::MAX), |_, _| false)
                .map_err(|e| db_err("a delete", e))?;
        }
        Ok(())
    }
}
