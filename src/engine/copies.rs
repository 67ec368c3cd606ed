//! SKELETON for the copy API/CLI work: signatures final, bodies written on
//! main (this file is replaced at merge).

use super::Pool;
use super::types::*;
use crate::error::{Error, ErrorKind, Result};

fn todo() -> Error {
    Error::new(ErrorKind::Unsupported, "not built yet")
}

impl Pool {
    /// `copy create SRC NAME`: NAME becomes a volume holding SRC's image now.
    pub fn copy_create(&self, _req: CopyCreateRequest) -> Result<CopyInfo> {
        Err(todo())
    }
    pub fn copy_list(&self) -> Vec<CopyInfo> {
        Vec::new()
    }
    pub fn copy_get(&self, _name: &str) -> Result<CopyInfo> {
        Err(todo())
    }
    /// Deletes a copy (any copy, in any order); its space goes back.
    pub fn copy_delete(&self, _name: &str) -> Result<()> {
        Err(todo())
    }
    /// The copy's source returns to the copy's image at once.
    pub fn copy_restore(&self, _name: &str) -> Result<CopyRestoreInfo> {
        Err(todo())
    }
    /// Separates a copy from its source (a background job).
    pub fn copy_split(&self, _name: &str, _req: CopySplitRequest) -> Result<CopySplitInfo> {
        Err(todo())
    }
}
