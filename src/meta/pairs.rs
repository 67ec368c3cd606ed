//! The pairs table: one JSON record per mirror pair, keyed by its object
//! id ([`PairRecord`]).

#![forbid(unsafe_code)]

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::model::pair::PairRecord;
use super::{Meta, PAGES, Tx, db_err, decode, encode};
use crate::error::Result;

pub(super) const PAIRS: TableDefinition<u64, &[u8]> = TableDefinition::new("pairs");

impl Meta {
    /// Every pair's record, by object id.
    pub fn pairs(&self) -> Result<Vec<PairRecord>> {
        let db = self.db()?;
        let txn = db
            .begin_read()
            .map_err(|e| db_err("a read transaction", e))?;
        let t = txn
            .open_table(PAIRS)
            .map_err(|e| db_err("opening a table", e))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| db_err("a scan", e))? {
            let (k, v) = item.map_err(|e| db_err("a scan", e))?;
            out.push(decode("pair", &k.value().to_string(), v.value())?);
        }
        Ok(out)
    }
}

impl Tx<'_> {
    pub fn put_pair(&mut self, p: &PairRecord) -> Result<()> {
        let bytes = encode(p)?;
        let mut t = self
            .txn
            .open_table(PAIRS)
            .map_err(|e| db_err("opening a table", e))?;
        t.insert(p.object, bytes.as_slice())
            .map_err(|e| db_err("a write", e))?;
        Ok(())
    }

    /// Deletes pair `p`'s record, its differential bitmap and its
    /// write-intent log.
    pub fn del_pair(&mut self, p: &PairRecord) -> Result<()> {
        let mut t = self
            .txn
            .open_table(PAIRS)
            .map_err(|e| db_err("opening a table", e))?;
        t.remove(p.object).map_err(|e| db_err("a delete", e))?;
        drop(t);
        let mut pages = self
            .txn
            .open_table(PAGES)
            .map_err(|e| db_err("opening a table", e))?;
        for object in [p.object, p.intent] {
            pages
                .retain_in((object, 0)..=(object, u64::MAX), |_, _| false)
                .map_err(|e| db_err("a delete", e))?;
        }
        Ok(())
    }
}
