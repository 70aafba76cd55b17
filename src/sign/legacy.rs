//! Legacy signatures (Singularity ≤ 3.5, spec/sif.md §10): a cleartext-signed
//! `SIFHASH:\n<hex>` over the object data alone. They protect neither the header nor the
//! descriptors, which is why verifying them must be asked for explicitly.

#![forbid(unsafe_code)]

use veil_fusefs::source::ReadAt;

use super::error::{Result, SignError};
use super::metadata::{DigestAlg, decode_hex, hash_object_into};
use crate::sif::{Descriptor, Extra, HashType, Sif};

const PREFIX: &[u8] = b"SIFHASH:\n";

/// True if a clearsigned plaintext is a legacy payload (JSON metadata never starts so).
pub fn is_legacy_plaintext(plaintext: &[u8]) -> bool {
    plaintext.starts_with(PREFIX)
}

/// The digest algorithm a legacy signature names in its descriptor.
fn algorithm(sig: &Descriptor) -> Result<DigestAlg> {
    let hash = match sig.extra() {
        Extra::Signature { hash, .. } => hash,
        _ => HashType::Other(0),
    };
    match hash {
        HashType::Sha256 => Ok(DigestAlg::Sha256),
        HashType::Sha384 => Ok(DigestAlg::Sha384),
        HashType::Sha512 => Ok(DigestAlg::Sha512),
        other => Err(SignError::HashUnsupported {
            id: sig.id,
            hash: other.name().to_string(),
        }),
    }
}

/// Checks a legacy payload against the concatenated data of `objects` (one object for
/// an object-linked signature, the whole group in slot order for a group-linked one).
/// `report_id` names the object in the integrity error (`None` for a group).
pub fn check<R: ReadAt>(
    sif: &Sif<R>,
    sig: &Descriptor,
    plaintext: &[u8],
    objects: &[&Descriptor],
    report_id: Option<u32>,
) -> Result<()> {
    let alg = algorithm(sig)?;
    let hex = plaintext
        .strip_prefix(PREFIX)
        .and_then(|h| std::str::from_utf8(h).ok())
        .map(str::trim)
        .ok_or(SignError::LegacyNotSifhash(sig.id))?;
    let want = decode_hex(hex)
        .filter(|v| v.len() == alg.output_len())
        .ok_or_else(|| SignError::LegacyDigest {
            id: sig.id,
            alg: alg.name(),
        })?;
    let mut h = alg.hasher();
    for d in objects {
        hash_object_into(sif, d, &mut h)?;
    }
    if h.finish() != want {
        return Err(SignError::ObjectIntegrity(report_id));
    }
    Ok(())
}
