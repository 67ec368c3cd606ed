//! The sparing table: the policy (key `policy`) and one record per
//! sparing under way (key `disk/<failing disk>`), JSON values.

#![forbid(unsafe_code)]

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::model::sparing::{SparingPolicy, SparingRecord};
use super::{Meta, Tx, db_err, decode, encode};
use crate::error::Result;

pub(super) const SPARING: TableDefinition<&str, &[u8]> = TableDefinition::new("sparing");

const POLICY: &str = "policy";
const OP_PREFIX: &str = "disk/";

impl Meta {
    /// The stored policy (the default if none was set) and every sparing
    /// under way.
    pub fn sparing(&self) -> Result<(SparingPolicy, Vec<SparingRecord>)> {
        let db = self.db()?;
        let txn = db
            .begin_read()
            .map_err(|e| db_err("a read transaction", e))?;
        let t = txn
            .open_table(SPARING)
            .map_err(|e| db_err("opening a table", e))?;
        let mut policy = SparingPolicy::default();
        let mut ops = Vec::new();
        for item in t.iter().map_err(|e| db_err("a scan", e))? {
            let (k, v) = item.map_err(|e| db_err("a scan", e))?;
            let key = k.value();
            if key == POLICY {
                policy = decode("sparing policy", key, v.value())?;
            } else if key.starts_with(OP_PREFIX) {
                ops.push(decode("sparing", key, v.value())?);
            }
        }
        Ok((policy, ops))
    }
}

impl Tx<'_> {
    fn sparing_put(&mut self, key: &str, bytes: &[u8]) -> Result<()> {
        let mut t = self
            .txn
            .open_table(SPARING)
            .map_err(|e| db_err("opening a table", e))?;
        t.insert(key, bytes).map_err(|e| db_err("a write", e))?;
        Ok(())
    }

    pub fn put_sparing_policy(&mut self, p: &SparingPolicy) -> Result<()> {
        self.sparing_put(POLICY, &encode(p)?)
    }

    pub fn put_sparing(&mut self, r: &SparingRecord) -> Result<()> {
        self.sparing_put(&format!("{OP_PREFIX}{}", r.disk), &encode(r)?)
    }

    pub fn del_sparing(&mut self, disk: &str) -> Result<()> {
        let mut t = self
            .txn
            .open_table(SPARING)
            .map_err(|e| db_err("opening a table", e))?;
        t.remove(format!("{OP_PREFIX}{disk}").as_str())
            .map_err(|e| db_err("a delete", e))?;
        Ok(())
    }
}
