//! The restripe table: one record per group being restriped (key: the
//! group's name), JSON values.

#![forbid(unsafe_code)]

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::model::reshape::ReshapeRecord;
use super::{Meta, Tx, db_err, decode, encode};
use crate::error::Result;

pub(super) const RESHAPES: TableDefinition<&str, &[u8]> = TableDefinition::new("reshapes");

impl Meta {
    /// Every restripe under way.
    pub fn reshapes(&self) -> Result<Vec<ReshapeRecord>> {
        let db = self.db()?;
        let txn = db
            .begin_read()
            .map_err(|e| db_err("a read transaction", e))?;
        let t = txn
            .open_table(RESHAPES)
            .map_err(|e| db_err("opening a table", e))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| db_err("a scan", e))? {
            let (k, v) = item.map_err(|e| db_err("a scan", e))?;
            out.push(decode("restripe", k.value(), v.value())?);
        }
        Ok(out)
    }
}

impl Tx<'_> {
    pub fn put_reshape(&mut self, r: &ReshapeRecord) -> Result<()> {
        let mut t = self
            .txn
            .open_table(RESHAPES)
            .map_err(|e| db_err("opening a table", e))?;
        t.insert(r.group.as_str(), encode(r)?.as_slice())
            .map_err(|e| db_err("a write", e))?;
        Ok(())
    }

    pub fn del_reshape(&mut self, group: &str) -> Result<()> {
        let mut t = self
            .txn
            .open_table(RESHAPES)
            .map_err(|e| db_err("opening a table", e))?;
        t.remove(group).map_err(|e| db_err("a delete", e))?;
        Ok(())
    }
}
