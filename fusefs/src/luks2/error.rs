//! The one error type of the LUKS2 module.
//!
//! Messages are single lines meant to be printed as `{err}`. Unlock failures are
//! coarse on purpose: a wrong passphrase never says which step (KDF, AF merge,
//! digest) disagreed.
//!
//! Where another library's error is the cause (serde_json, argon2, uuid) it is kept
//! as the typed source, and a field of the JSON that fails its type check is named by
//! its path with a fixed description ([`Error::Field`]). The other header, metadata,
//! "unsupported" and option diagnostics stay text ([`Error::BadHeader`],
//! [`Error::BadMetadata`], [`Error::Unsupported`], [`Error::InvalidOptions`]): each
//! is a one-off consistency rule of the format whose message names the place and the
//! values involved (`keyslot 3: area offset beyond the keyslots area`), nothing a
//! caller matches on beyond the variant, and an enum of some sixty single-use cases
//! would only restate the messages.

#![forbid(unsafe_code)]

use std::io;

/// Everything that can go wrong reading, unlocking or writing a LUKS2 volume.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the underlying volume failed; `op` says what was being
    /// read or written.
    #[error("I/O error on the LUKS2 volume while {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// The source ends before a structure the header says is there.
    #[error("LUKS2 volume is truncated: {what} needs {needed} bytes, the volume has {len}")]
    Truncated {
        what: &'static str,
        needed: u64,
        len: u64,
    },

    /// No LUKS magic at offset 0 (and no usable secondary header).
    #[error("not a LUKS volume (no LUKS2 header found)")]
    NotLuks,

    /// A LUKS1 volume: recognised, but not something this implementation reads.
    #[error(
        "this is a LUKS1 volume; only LUKS2 is supported (convert it with `cryptsetup convert --type luks2`)"
    )]
    Luks1Unsupported,

    /// Neither binary header copy is valid; the text says why for each copy.
    #[error("no valid LUKS2 header: {0}")]
    BadHeader(String),

    /// The JSON metadata area is malformed or inconsistent.
    #[error("invalid LUKS2 metadata: {0}")]
    BadMetadata(String),

    /// A member of the JSON metadata is missing or of the wrong type: `at` is its
    /// path (`keyslots.0.area.offset`), `problem` what is wrong with it.
    #[error("invalid LUKS2 metadata: {at} {problem}")]
    Field { at: String, problem: &'static str },

    /// The JSON metadata area is not JSON.
    #[error("invalid LUKS2 metadata: JSON syntax: {0}")]
    JsonSyntax(#[source] serde_json::Error),

    /// The edited metadata could not be written as JSON.
    #[error("invalid LUKS2 metadata: cannot serialize JSON: {0}")]
    JsonWrite(#[source] serde_json::Error),

    /// A keyslot's argon2 parameters are out of the algorithm's range.
    #[error("invalid LUKS2 metadata: argon2 parameters: {0}")]
    Argon2Params(#[source] argon2::Error),

    /// Valid LUKS2, but uses something this implementation does not do.
    #[error("unsupported LUKS2 volume: {0}")]
    Unsupported(String),

    /// argon2 refused to derive the key (other than for want of memory).
    #[error("unsupported LUKS2 volume: argon2: {0}")]
    Argon2(#[source] argon2::Error),

    /// The passphrase opens no keyslot that was tried (coarse on purpose).
    #[error("no key available with this passphrase")]
    WrongPassphrase,

    /// The caller named a keyslot that does not exist or cannot be used.
    #[error("keyslot {0} does not exist or is not usable")]
    NoSuchKeyslot(u32),

    /// The volume has no keyslot that could be tried at all.
    #[error("the volume has no usable keyslot")]
    NoUsableKeyslot,

    /// A keyslot's KDF cost is beyond the configured limits (a hostile or broken header).
    #[error("keyslot {slot}: {}", cost_text(what, *value, *limit))]
    KdfCostTooHigh {
        slot: u32,
        what: &'static str,
        value: u64,
        limit: u64,
    },

    /// One try of a keyslot (or of the digest) would cost more work than the limit
    /// allows. `cost` and `limit` are in words, `value` / `max` in the limit's unit
    /// (iterations, or argon2 passes × KiB), for callers that suggest a new limit.
    #[error("keyslot {slot}: {cost}, more than the limit of {limit}")]
    KdfWorkTooHigh {
        slot: u32,
        cost: String,
        limit: String,
        value: u64,
        max: u64,
    },

    /// Keyslots tried before this one used up the unlock's budget (`value` and
    /// `max` in units of the per-keyslot cap).
    #[error(
        "keyslot {slot} was not tried: the {tried} keyslot(s) tried before it used up this unlock's key-derivation budget ({max} keyslots' worth at the cap; trying it too makes {value:.1})"
    )]
    KdfBudgetSpent {
        slot: u32,
        tried: usize,
        value: f64,
        max: f64,
    },

    /// argon2 would need more memory than the system can give right now.
    #[error(
        "argon2 needs {} MiB of memory for this keyslot but only {} MiB is available (MemAvailable / cgroup limit)",
        .needed.div_ceil(1 << 20), .available >> 20
    )]
    InsufficientMemory { needed: u64, available: u64 },

    /// Options given to create or re-key are invalid.
    #[error("invalid LUKS2 options: {0}")]
    InvalidOptions(String),

    /// The volume UUID asked for, as given, does not parse.
    #[error("invalid LUKS2 options: uuid \"{uuid}\": {err}")]
    BadUuid {
        uuid: String,
        #[source]
        err: uuid::Error,
    },

    /// All 32 keyslots are in use.
    #[error("no free keyslot: all 32 keyslots are in use")]
    AllKeyslotsUsed,

    /// The keyslots area has no room for another keyslot's `needed` bytes.
    #[error("no free keyslot: the keyslots area has no free {needed} bytes")]
    KeyslotsAreaFull { needed: u64 },

    /// Removing this keyslot would leave the volume without any way to unlock it.
    #[error("refusing to remove keyslot {0}: it is the last keyslot of the volume")]
    LastKeyslot(u32),

    /// The operating system's random generator failed.
    #[error("random number generator failed: {0}")]
    Random(#[source] getrandom::Error),
}

/// Result alias for the LUKS2 module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn meta(msg: impl Into<String>) -> Self {
        Error::BadMetadata(msg.into())
    }

    /// The metadata member at path `at` has `problem`.
    pub(crate) fn field(at: impl Into<String>, problem: &'static str) -> Self {
        Error::Field {
            at: at.into(),
            problem,
        }
    }

    /// An I/O error while doing `op` (for `map_err`).
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Error::Io { op, source }
    }
}

/// The memory cost in the words a user needs (how much, against what); the other
/// costs by name.
fn cost_text(what: &str, value: u64, limit: u64) -> String {
    if what == "memory (KiB)" {
        format!(
            "argon2 needs {} MiB of memory, more than the {} MiB any LUKS2 keyslot may use \
             (cryptsetup's maximum): the header is damaged or was not made by cryptsetup",
            value.div_ceil(1024),
            limit / 1024
        )
    } else {
        format!("KDF cost {what} = {value} exceeds the limit of {limit}")
    }
}
