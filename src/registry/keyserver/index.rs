//! HKP's machine-readable index (`op=index&options=mr`): `info:`, then per key a
//! `pub:` line and its `uid:` lines. A line that does not parse is skipped and
//! counted, never fatal: the index only helps a user find a fingerprint, which
//! `key pull` then checks.

#![forbid(unsafe_code)]

use serde::Serialize;

/// The most keys taken from one index.
pub const MAX_KEYS: usize = 1000;
/// The most user IDs taken per key.
const MAX_UIDS: usize = 100;

/// One key of an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexKey {
    /// A fingerprint (40 or 64 hex digits) or key ID (16 or 8), upper-case.
    pub key: String,
    /// The OpenPGP public-key algorithm number.
    pub algorithm: Option<u8>,
    pub bits: Option<u32>,
    /// Seconds since the epoch.
    pub created: Option<i64>,
    pub expires: Option<i64>,
    pub revoked: bool,
    pub disabled: bool,
    pub expired: bool,
    /// Decoded, with control characters escaped.
    pub user_ids: Vec<String>,
}

impl IndexKey {
    /// True when `key` is a whole fingerprint.
    pub fn is_fingerprint(&self) -> bool {
        self.key.len() == 40 || self.key.len() == 64
    }
}

/// An index's keys and the number of lines skipped.
#[derive(Debug, Default)]
pub struct Index {
    pub keys: Vec<IndexKey>,
    pub skipped: usize,
}

fn number<T: std::str::FromStr>(field: Option<&str>) -> Option<T> {
    field
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .and_then(|f| f.parse().ok())
}

/// `%XX` escapes undone (bad ones kept as written), control characters escaped.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        if b[i] == b'%'
            && let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    crate::registry::error::printable(&String::from_utf8_lossy(&out))
}

fn hex_key(field: &str) -> Option<String> {
    let f = field.trim();
    let f = f
        .strip_prefix("0x")
        .or_else(|| f.strip_prefix("0X"))
        .unwrap_or(f);
    ([8, 16, 40, 64].contains(&f.len()) && f.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| f.to_ascii_uppercase())
}

/// Parses an index.
pub fn parse(text: &str) -> Index {
    let mut index = Index::default();
    // False after a `pub:` line that was skipped: its `uid:` lines go with it.
    let mut in_key = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let mut f = line.split(':');
        match f.next() {
            Some("info") => {}
            Some("pub") => {
                let key = f.next().and_then(hex_key);
                in_key = key.is_some() && index.keys.len() < MAX_KEYS;
                let Some(key) = key.filter(|_| in_key) else {
                    index.skipped += 1;
                    continue;
                };
                let algorithm = number(f.next());
                let bits = number(f.next());
                let created = number(f.next());
                let expires = number(f.next());
                let flags = f.next().unwrap_or("");
                index.keys.push(IndexKey {
                    key,
                    algorithm,
                    bits,
                    created,
                    expires,
                    revoked: flags.contains('r'),
                    disabled: flags.contains('d'),
                    expired: flags.contains('e'),
                    user_ids: Vec::new(),
                });
            }
            Some("uid") => match (index.keys.last_mut().filter(|_| in_key), f.next()) {
                (Some(k), Some(u)) if k.user_ids.len() < MAX_UIDS => k.user_ids.push(unescape(u)),
                _ => index.skipped += 1,
            },
            _ => index.skipped += 1,
        }
    }
    index
}

/// The name of an OpenPGP public-key algorithm number.
pub fn algorithm_name(a: Option<u8>) -> &'static str {
    match a {
        Some(1..=3) => "RSA",
        Some(16) => "ElGamal",
        Some(17) => "DSA",
        Some(18) => "ECDH",
        Some(19) => "ECDSA",
        Some(22) => "EdDSA",
        Some(25) => "X25519",
        Some(27) => "Ed25519",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_is_read_and_its_bad_lines_counted() {
        let text = "info:1:2\r\npub:AB60BF8FD61BB9FE0CAFD31DD0E6C4F452A71A51:1:2048:1796658481::\r\n\
uid:Alice Example <alice%40example.org>%3A%1b[31m:1796658481::\r\n\
pub:0xd0e6c4f452a71a51:22::::re\nuid:%zz%4\n\
pub:nothex:1:1:1::\nuid:orphan of a bad key\nbogus line\nuid\n";
        let i = parse(text);
        assert_eq!(i.keys.len(), 2);
        let a = &i.keys[0];
        assert_eq!(a.key, "AB60BF8FD61BB9FE0CAFD31DD0E6C4F452A71A51");
        assert!(a.is_fingerprint());
        assert_eq!(
            (a.algorithm, a.bits, a.created),
            (Some(1), Some(2048), Some(1796658481))
        );
        assert_eq!(
            a.user_ids,
            vec!["Alice Example <alice@example.org>:\\u{1b}[31m"]
        );
        let b = &i.keys[1];
        assert_eq!(b.key, "D0E6C4F452A71A51");
        assert!(b.revoked && b.expired && !b.disabled);
        assert_eq!(b.user_ids, vec!["%zz%4"]);
        // pub:nothex and its uid, the bogus line, the bare uid.
        assert_eq!(i.skipped, 4);
        assert_eq!(algorithm_name(b.algorithm), "EdDSA");
    }

    /// Mutations of an index (bytes replaced by separators, escapes, digits and
    /// non-UTF-8) parse without a panic, and within the limits.
    #[test]
    fn mutated_indexes_parse_within_limits() {
        let base =
            b"info:1:2\npub:AB60BF8FD61BB9FE0CAFD31DD0E6C4F452A71A51:1:2048:1::r\nuid:A %3C%:1::\n"
                .to_vec();
        let pool = b":%\n\r0aF\xff\xc3x";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut m = base.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % m.len();
                m[at] = pool[(seed >> 32) as usize % pool.len()];
            }
            let i = parse(&String::from_utf8_lossy(&m));
            assert!(i.keys.len() <= 1 && i.keys.iter().all(|k| k.user_ids.len() <= MAX_UIDS));
            for k in &i.keys {
                assert!(k.user_ids.iter().all(|u| !u.chars().any(char::is_control)));
            }
        }
        let many = "pub:0123456789ABCDEF:1:1:1::\nuid:x\n".repeat(MAX_KEYS + 5);
        let i = parse(&many);
        assert_eq!(i.keys.len(), MAX_KEYS);
        assert_eq!(i.skipped, 10);
    }
}
