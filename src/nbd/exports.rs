//! A fixed set of exports: for tests, tools and a daemon without an
//! engine behind it. Each device is served behind its own
//! [`Switch`], as the engine's volumes are, so that byte-granular writes
//! get its read-modify-write under a range lock.

use std::sync::{Arc, RwLock};

use super::{Export, ExportProvider};
use crate::blockdev::BlockDev;
use crate::error::{Error, Result};
use crate::stack::switch::Switch;

struct Entry {
    name: String,
    description: String,
    dev: Arc<dyn BlockDev>,
    read_only: bool,
}

/// Exports added by name; the first one added is the default export ("").
#[derive(Default)]
pub struct StaticExports {
    entries: RwLock<Vec<Entry>>,
}

impl StaticExports {
    pub fn new() -> StaticExports {
        StaticExports::default()
    }

    /// Adds (or replaces) an export, behind a [`Switch`] of its own.
    pub fn add(
        &self,
        name: &str,
        description: &str,
        dev: Arc<dyn BlockDev>,
        read_only: bool,
    ) -> &Self {
        let mut g = self.entries.write().unwrap_or_else(|p| p.into_inner());
        g.retain(|e| e.name != name);
        g.push(Entry {
            name: name.to_string(),
            description: description.to_string(),
            dev: Arc::new(Switch::new(dev)),
            read_only,
        });
        self
    }
}

impl ExportProvider for StaticExports {
    fn list(&self) -> Vec<(String, String)> {
        let g = self.entries.read().unwrap_or_else(|p| p.into_inner());
        g.iter()
            .map(|e| (e.name.clone(), e.description.clone()))
            .collect()
    }

    fn open(&self, name: &str) -> Result<Export> {
        let g = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let e = if name.is_empty() {
            g.first()
        } else {
            g.iter().find(|e| e.name == name)
        };
        let e = e.ok_or_else(|| Error::not_found(format!("there is no export named {name:?}")))?;
        Ok(Export {
            name: e.name.clone(),
            description: e.description.clone(),
            dev: Arc::clone(&e.dev),
            read_only: e.read_only,
            bitmaps: Vec::new(),
            guard: None,
        })
    }
}
