//! Signing a SIF (spec/sif.md §9): one clear-signed metadata JSON per object group,
//! stored as a Signature object with no group, linked to the group, carrying the
//! signer's primary-key fingerprint. The partitions are hashed as stored, so an
//! encrypted image is signed over its ciphertext and no decryption key is involved.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::Path;

use sequoia_openpgp::crypto::KeyPair;

use super::error::{Result, SignError};
use super::metadata::{group_min_id, image_metadata};
use super::pgp;
use crate::sif::{DataType, Descriptor, Editor, Extra, HashType, Link, NewObject, ObjectData, Sif};

/// Which objects to sign.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Selection {
    /// One signature per group, over all of its objects (the default, and `--all`).
    #[default]
    AllGroups,
    /// One signature over all objects of this group.
    Group(u32),
    /// These objects, one signature per group they belong to.
    Objects(Vec<u32>),
}

/// One signature that was added.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Signed {
    pub signature: u32,
    pub group: u32,
    pub objects: Vec<u32>,
}

/// Group → the IDs to sign in it, ascending.
fn plan<R: veil_fusefs::source::ReadAt>(
    sif: &Sif<R>,
    sel: &Selection,
) -> Result<BTreeMap<u32, Vec<u32>>> {
    let mut plan: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let members = |g: u32| -> Vec<u32> {
        let mut v: Vec<u32> = sif
            .objects()
            .filter(|d| d.group() == g)
            .map(|d| d.id)
            .collect();
        v.sort_unstable();
        v
    };
    match sel {
        Selection::AllGroups => {
            for d in sif.objects().filter(|d| d.group() != 0) {
                plan.entry(d.group()).or_default();
            }
            if plan.is_empty() {
                return Err(SignError::NoGroups);
            }
            for (g, ids) in plan.iter_mut() {
                *ids = members(*g);
            }
        }
        Selection::Group(g) => {
            if *g == 0 {
                return Err(SignError::GroupIdZero);
            }
            let ids = members(*g);
            if ids.is_empty() {
                return Err(SignError::GroupNotFound(*g));
            }
            plan.insert(*g, ids);
        }
        Selection::Objects(ids) => {
            for &id in ids {
                let d = sif.object(id).map_err(|_| SignError::ObjectNotFound(id))?;
                if d.group() == 0 {
                    return Err(SignError::UngroupedObject(id));
                }
                let e = plan.entry(d.group()).or_default();
                if !e.contains(&id) {
                    e.push(id);
                }
            }
            for ids in plan.values_mut() {
                ids.sort_unstable();
            }
        }
    }
    Ok(plan)
}

/// Signs the image at `path` in place with `key`, whose certificate's primary
/// fingerprint is `fingerprint`. Returns the signatures added, in group order.
pub fn sign_image(
    path: &Path,
    key: &KeyPair,
    fingerprint: [u8; 20],
    sel: &Selection,
) -> Result<Vec<Signed>> {
    let sif = Sif::open_path(path)?;
    let plan = plan(&sif, sel)?;
    drop(sif);
    let mut out = Vec::new();
    for (group, ids) in plan {
        // Re-read after each signature is added: the reference signs the groups one
        // after another, each over the image as it then is.
        let sif = Sif::open_path(path)?;
        let objects: Vec<&Descriptor> = ids
            .iter()
            .map(|&id| sif.object(id).map_err(|_| SignError::ObjectNotFound(id)))
            .collect::<Result<_>>()?;
        let min_id = group_min_id(&sif, group).ok_or(SignError::GroupNotFound(group))?;
        let json = image_metadata(&sif, min_id, &objects)?.to_json();
        drop(objects);
        drop(sif);
        let signed = pgp::sign_cleartext(&json, key.clone())?;
        let mut ed = Editor::open(path)?;
        let mut obj = NewObject::new(DataType::Signature, ObjectData::Bytes(&signed));
        obj.link = Link::Group(group);
        obj.extra = Extra::Signature {
            hash: HashType::Sha256,
            fingerprint: Some(fingerprint),
        };
        let id = ed.add(obj)?;
        out.push(Signed {
            signature: id,
            group,
            objects: ids,
        });
    }
    Ok(out)
}

/// The metadata JSON that signing `group` of the image would sign (for inspection and
/// tests; it is what `sign` puts between the cleartext armor lines).
pub fn metadata_json(path: &Path, group: u32) -> Result<Vec<u8>> {
    let sif = Sif::open_path(path)?;
    let ids = plan(&sif, &Selection::Group(group))?
        .remove(&group)
        .unwrap_or_default();
    let objects: Vec<&Descriptor> = ids
        .iter()
        .map(|&id| sif.object(id).map_err(|_| SignError::ObjectNotFound(id)))
        .collect::<Result<_>>()?;
    let min_id = group_min_id(&sif, group).ok_or(SignError::GroupNotFound(group))?;
    Ok(image_metadata(&sif, min_id, &objects)?.to_json())
}
