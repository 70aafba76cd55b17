//! Just enough PEM (RFC 7468, with RFC 1421 headers) to find the first block of a
//! file, as Go's `pem.Decode` does for the peers, and to write a block back.

#![forbid(unsafe_code)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// One decoded PEM block. The body may be a private key, so it is wiped on drop.
pub struct Block {
    pub label: String,
    /// RFC 1421 headers such as `Proc-Type: 4,ENCRYPTED`.
    pub headers: Vec<(String, String)>,
    pub der: Zeroizing<Vec<u8>>,
}

impl Block {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The first PEM block of `text` (anything before it is ignored), or `None` when
/// there is no complete block.
pub fn first_block(text: &[u8]) -> Option<Block> {
    let text = std::str::from_utf8(text).ok().or_else(|| {
        // Leading binary junk: cut at the first BEGIN line and retry.
        let at = find(text, b"-----BEGIN ")?;
        std::str::from_utf8(&text[at..]).ok()
    })?;
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----")?;
    let label = &rest[..label_end];
    if label.contains('\n') {
        return None;
    }
    let body_start = rest[label_end + 5..].find('\n')? + label_end + 5 + 1;
    let end_marker = format!("-----END {label}-----");
    let body_len = rest[body_start..].find(&end_marker)?;
    let body = &rest[body_start..body_start + body_len];

    let mut headers = Vec::new();
    let mut b64 = Zeroizing::new(String::with_capacity(body.len()));
    let mut in_headers = true;
    for line in body.lines() {
        let line = line.trim();
        if in_headers {
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
                continue;
            }
            in_headers = false;
            if line.is_empty() {
                continue;
            }
        }
        b64.push_str(line);
    }
    let der = Zeroizing::new(STANDARD.decode(b64.as_bytes()).ok()?);
    Some(Block {
        label: label.to_string(),
        headers,
        der,
    })
}

/// PEM text for `der` under `label`: 64-column base64, a newline after every line.
pub fn encode(label: &str, der: &[u8]) -> Vec<u8> {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_headers() {
        let der: Vec<u8> = (0..=255u8).collect();
        let text = encode("MESSAGE", &der);
        let lines: Vec<&str> = std::str::from_utf8(&text).unwrap().lines().collect();
        assert_eq!(lines[0], "-----BEGIN MESSAGE-----");
        assert!(lines[1..lines.len() - 1].iter().all(|l| l.len() <= 64));
        let b = first_block(&text).unwrap();
        assert_eq!(b.label, "MESSAGE");
        assert_eq!(&b.der[..], &der[..]);

        let with_headers = b"junk\n-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAEC\n-----END RSA PRIVATE KEY-----\n";
        let b = first_block(with_headers).unwrap();
        assert_eq!(b.header("proc-type"), Some("4,ENCRYPTED"));
        assert_eq!(&b.der[..], &[0, 1, 2]);
    }

    #[test]
    fn incomplete_blocks_are_rejected() {
        assert!(first_block(b"").is_none());
        assert!(first_block(b"-----BEGIN X-----\nAAAA\n").is_none());
        assert!(first_block(b"-----BEGIN X-----\n!!!\n-----END X-----\n").is_none());
        assert!(first_block(b"-----BEGIN X-----\nAAAA\n-----END Y-----\n").is_none());
    }
}
