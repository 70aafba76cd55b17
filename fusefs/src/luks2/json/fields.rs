//! Reading one field of the metadata with its exact type, every failure naming the
//! field's path in the JSON.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

use crate::luks2::error::{Error, Result};

pub(super) fn as_obj<'a>(v: &'a Value, ctx: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| Error::field(ctx, "is not a JSON object"))
}

pub(super) fn field<'a>(o: &'a Map<String, Value>, key: &str, ctx: &str) -> Result<&'a Value> {
    o.get(key)
        .ok_or_else(|| Error::field(format!("{ctx}.{key}"), "is missing"))
}

pub(super) fn obj_field<'a>(
    o: &'a Map<String, Value>,
    key: &str,
    ctx: &str,
) -> Result<&'a Map<String, Value>> {
    as_obj(field(o, key, ctx)?, &format!("{ctx}.{key}"))
}

pub(super) fn str_field<'a>(o: &'a Map<String, Value>, key: &str, ctx: &str) -> Result<&'a str> {
    field(o, key, ctx)?
        .as_str()
        .ok_or_else(|| Error::field(format!("{ctx}.{key}"), "is not a string"))
}

/// A JSON number that is a non-negative integer fitting u32 (no fraction, no exponent).
pub(super) fn u32_field(o: &Map<String, Value>, key: &str, ctx: &str) -> Result<u32> {
    field(o, key, ctx)?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            Error::field(
                format!("{ctx}.{key}"),
                "is not an integer between 0 and 4294967295",
            )
        })
}

/// LUKS2's string-uint64: a JSON string of decimal digits.
pub(super) fn u64_str(o: &Map<String, Value>, key: &str, ctx: &str) -> Result<u64> {
    let s = str_field(o, key, ctx)?;
    parse_decimal(s).ok_or_else(|| {
        Error::field(
            format!("{ctx}.{key}"),
            "is not a decimal unsigned 64-bit number in a string",
        )
    })
}

pub(super) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Object member names are decimal ids without leading zeros.
pub(super) fn parse_id(name: &str, what: &str) -> Result<u32> {
    let ok = !name.is_empty() && name.len() <= 10 && (name == "0" || !name.starts_with('0'));
    ok.then(|| parse_decimal(name))
        .flatten()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| Error::field(format!("{what} name \"{name}\""), "is not a decimal id"))
}

pub(super) fn b64_field(o: &Map<String, Value>, key: &str, ctx: &str) -> Result<Vec<u8>> {
    let s = str_field(o, key, ctx)?;
    if s.len() > 1024 {
        return Err(Error::field(format!("{ctx}.{key}"), "is too long"));
    }
    B64.decode(s)
        .map_err(|_| Error::field(format!("{ctx}.{key}"), "is not valid base64"))
}

pub(super) fn str_list(o: &Map<String, Value>, key: &str, ctx: &str) -> Result<Vec<String>> {
    let a = field(o, key, ctx)?
        .as_array()
        .ok_or_else(|| Error::field(format!("{ctx}.{key}"), "is not an array"))?;
    a.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::field(format!("{ctx}.{key}"), "has a non-string element"))
        })
        .collect()
}

/// An array of id strings (`["0","1"]`), without duplicates.
pub(super) fn id_list(o: &Map<String, Value>, key: &str, ctx: &str) -> Result<Vec<u32>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for s in str_list(o, key, ctx)? {
        let id = parse_id(&s, &format!("{ctx}.{key} element"))?;
        if !seen.insert(id) {
            return Err(Error::meta(format!("{ctx}.{key} lists {id} twice")));
        }
        out.push(id);
    }
    Ok(out)
}
