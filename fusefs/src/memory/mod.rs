//! Process memory: owned mappings and what the system can still give.
//!
//! `map` is the one place that maps, advises, locks and unmaps ([`AnonMap`] for
//! private memory, `FileMap` for a file); its users keep only what is theirs: the
//! block pool of the squashfs reader (`squashfs::pool`), guarded memory for secrets
//! and argon2's working memory (in `luks2`), and [`mapping`], a file mapping that a
//! truncation of the file cannot crash. `available` says how much memory this
//! process may still use.

mod available;
mod map;
pub mod mapping;

pub use available::available_bytes;
pub(crate) use map::{Advice, AnonMap, page_size};
