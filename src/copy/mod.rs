//! copy: instant copies (seeds 000/001, StorageTek; US 6,779,094,
//! 6,779,095, 6,804,755).

pub mod map;
pub mod maps;
pub mod page;
