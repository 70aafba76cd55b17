//! SIF (Singularity Image Format) container format: read, write, add and delete
//! objects, byte-compatible with Sylabs' reference library (spec/sif.md).
//!
//! No cryptography and no policy here: objects are descriptors plus byte ranges, and a
//! partition is handed to the layers above as a [`veil_fusefs::source::Slice`] of the file.

mod descriptor;
mod error;
mod header;
mod image;
pub mod report;
mod types;
mod writer;

pub use descriptor::{DESCRIPTOR_LEN, Descriptor, Extra, FINGERPRINT_LEN, GROUP_MASK, Link};
pub use error::{Result, SifError};
pub use header::{DEFAULT_LAUNCH_SCRIPT, GO_ZERO_TIME, HEADER_LEN, Header};
pub use image::{MAX_DESCRIPTORS, Sif};
pub use types::{Arch, DataType, FormatType, FsType, HashType, MessageType, PartType, SbomFormat};
pub use writer::{
    CreateOptions, DEFAULT_DESCRIPTORS, DeleteOptions, Editor, NewObject, ObjectData, create,
    write_new,
};

/// Fuzzing entry point: parse arbitrary bytes as a SIF and touch everything a reader
/// would. Shared by the cargo-fuzz target and the corpus replay test.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    if let Ok(sif) = Sif::open(data) {
        let _ = report::header_text(sif.header());
        let _ = report::list_text(sif.objects());
        for d in sif.objects() {
            let _ = report::info_text(d);
            let _ = report::object_json(d);
            let _ = sif.read_object(d, 1 << 20);
        }
        let _ = sif.primary_partition();
    }
}
