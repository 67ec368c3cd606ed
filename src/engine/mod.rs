//! engine: the pool — disks, RAID groups and volumes, built from metadata.

pub mod types;
