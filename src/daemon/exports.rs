//! The pool as the NBD server's export provider: every volume is an export
//! under its own name.

use std::sync::Arc;

use crate::blockdev::BlockDev;
use crate::engine::Pool;
use crate::error::Result;
use crate::nbd::{Export, ExportProvider};

/// Serves a pool's volumes over NBD.
pub struct PoolExports(pub Arc<Pool>);

impl ExportProvider for PoolExports {
    fn list(&self) -> Vec<(String, String)> {
        self.0
            .volume_list()
            .into_iter()
            .filter(|v| self.0.host_accessible(&v.name))
            .map(|v| {
                let desc = format!("ferrosan volume {} on group {}", v.name, v.group);
                (v.name, desc)
            })
            .collect()
    }

    fn open(&self, name: &str) -> Result<Export> {
        let (info, dev, guard) = self.0.open_volume(name)?;
        let bitmaps = self.0.volume_bitmaps(&info.name);
        Ok(Export {
            description: format!("ferrosan volume {} on group {}", info.name, info.group),
            name: info.name,
            dev: dev as Arc<dyn BlockDev>,
            read_only: info.read_only,
            bitmaps,
            guard: Some(guard),
        })
    }
}
