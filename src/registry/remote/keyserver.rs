//! Keyserver requests, in the helper: HKP (`/pks/lookup`, `/pks/add`) and VKS
//! (`/vks/v1/…`) over the client's HTTP stack, each bounded in time
//! (`VEIL_KEYSERVER_TIMEOUT` seconds, 30 by default) and in the size of its answer.
//! What a server says is passed back as text; `veil` checks it.

#![forbid(unsafe_code)]

use std::time::Duration;

use reqwest::Url;

use crate::registry::error::{RegistryError, Result, printable};
use crate::registry::keyserver::{
    DEFAULT_TIMEOUT, KeyProtocol, Keyserver, MAX_INDEX_ANSWER, MAX_KEY_ANSWER,
};

/// The largest answer to a push read (servers say a line or two).
const MAX_PUSH_ANSWER: u64 = 64 << 10;

fn fail(server: &Keyserver, why: impl Into<String>) -> RegistryError {
    RegistryError::Keyserver {
        url: server.url.clone(),
        why: why.into(),
    }
}

struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

fn timeout() -> Duration {
    let secs = std::env::var("VEIL_KEYSERVER_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(DEFAULT_TIMEOUT);
    Duration::from_secs(secs.min(3600))
}

impl Http {
    fn new(server: &Keyserver) -> Result<Http> {
        let rt = super::client::runtime()?;
        let t = timeout();
        let client = reqwest::Client::builder()
            .connect_timeout(t.min(Duration::from_secs(10)))
            .timeout(t)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                // A few hops, and never from HTTPS down to plain HTTP.
                let was_https = attempt.previous().iter().any(|u| u.scheme() == "https");
                if attempt.previous().len() > 3 {
                    attempt.error("more than 3 redirects")
                } else if was_https && attempt.url().scheme() != "https" {
                    attempt.error("a redirect from HTTPS to plain HTTP")
                } else {
                    attempt.follow()
                }
            }))
            .user_agent(concat!("veil/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| fail(server, format!("setting up the client: {e}")))?;
        Ok(Http { rt, client })
    }

    /// Sends `req`; `None` for a 404, else the body, at most `cap` bytes, as text.
    fn send(
        &self,
        server: &Keyserver,
        req: reqwest::RequestBuilder,
        cap: u64,
    ) -> Result<Option<String>> {
        self.rt.block_on(async {
            let mut res = req
                .send()
                .await
                .map_err(|e| fail(server, request_text(&e)))?;
            let status = res.status();
            if status.as_u16() == 404 {
                return Ok(None);
            }
            if res.content_length().is_some_and(|n| n > cap) {
                return Err(fail(server, too_large(cap)));
            }
            let mut body = Vec::new();
            while let Some(chunk) = res
                .chunk()
                .await
                .map_err(|e| fail(server, request_text(&e)))?
            {
                if (body.len() + chunk.len()) as u64 > cap {
                    return Err(fail(server, too_large(cap)));
                }
                body.extend_from_slice(&chunk);
            }
            let text = String::from_utf8_lossy(&body).into_owned();
            if !status.is_success() {
                let said = text
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or("");
                let said: String = printable(said).chars().take(200).collect();
                return Err(fail(
                    server,
                    if said.is_empty() || said.starts_with('<') {
                        format!("the keyserver answered {status}")
                    } else {
                        format!("the keyserver answered {status}: {said}")
                    },
                ));
            }
            Ok(Some(text))
        })
    }
}

fn too_large(cap: u64) -> String {
    format!(
        "the answer is larger than {} KiB (a broken or hostile keyserver?)",
        cap >> 10
    )
}

/// A request error and its causes on one line.
fn request_text(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        format!(
            "no answer within {} s (VEIL_KEYSERVER_TIMEOUT sets the limit)",
            timeout().as_secs()
        )
    } else {
        String::new()
    };
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg = if msg.is_empty() {
                t
            } else {
                format!("{msg}: {t}")
            };
        }
        src = s.source();
    }
    // The URL is the server's and the request's, which the caller's message names.
    if let Some(u) = e.url() {
        msg = msg.replace(&format!(" for url ({u})"), "");
    }
    if msg.contains("Connection refused") {
        msg.push_str(" (is the keyserver running, and the URL right?)");
    }
    printable(msg.lines().next().unwrap_or(""))
}

fn url(server: &Keyserver, path: &str) -> Result<Url> {
    Url::parse(&format!("{}{path}", server.url))
        .map_err(|e| fail(server, format!("not a URL: {e}")))
}

/// True for 8, 16, 40 or 64 hex digits: a key ID or fingerprint, which HKP wants as
/// `0x…`.
fn is_key_id(text: &str) -> bool {
    [8, 16, 40, 64].contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn hkp_lookup(server: &Keyserver, op: &str, search: &str) -> Result<Url> {
    let mut u = url(server, "/pks/lookup")?;
    u.query_pairs_mut()
        .append_pair("op", op)
        .append_pair("options", "mr")
        .append_pair("fingerprint", "on")
        .append_pair("search", search);
    Ok(u)
}

fn vks_lookup(server: &Keyserver, text: &str) -> Result<Url> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let mut u = url(server, "/vks/v1")?;
    let by = if is_key_id(t) && t.len() >= 40 {
        "by-fingerprint"
    } else if is_key_id(t) && t.len() == 16 {
        "by-keyid"
    } else if t.contains('@') {
        "by-email"
    } else {
        return Err(fail(
            server,
            "a VKS keyserver finds keys by fingerprint, 16-digit key ID or whole e-mail address only",
        ));
    };
    let value = if by == "by-email" {
        t.to_string()
    } else {
        t.to_ascii_uppercase()
    };
    u.path_segments_mut()
        .map_err(|_| fail(server, "not a base URL"))?
        .push(by)
        .push(&value);
    Ok(u)
}

/// The key with `fingerprint`, as `server` answers.
pub fn get(server: &Keyserver, fingerprint: &str) -> Result<Option<String>> {
    if !(is_key_id(fingerprint) && fingerprint.len() >= 40) {
        return Err(fail(
            server,
            "asked for something that is not a fingerprint",
        ));
    }
    let http = Http::new(server)?;
    let u = match server.protocol {
        KeyProtocol::Hkp => {
            let mut u = hkp_lookup(server, "get", &format!("0x{fingerprint}"))?;
            u.query_pairs_mut().append_pair("exact", "on");
            u
        }
        KeyProtocol::Vks => vks_lookup(server, fingerprint)?,
    };
    http.send(server, http.client.get(u), MAX_KEY_ANSWER)
}

/// What `server` finds for `text`.
pub fn search(server: &Keyserver, text: &str) -> Result<Option<String>> {
    let http = Http::new(server)?;
    match server.protocol {
        KeyProtocol::Hkp => {
            let t = text.trim();
            // A fingerprint copied from gpg comes in groups of four.
            let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
            let bare = compact
                .strip_prefix("0x")
                .or_else(|| compact.strip_prefix("0X"))
                .unwrap_or(&compact);
            let search = if is_key_id(bare) {
                format!("0x{bare}")
            } else {
                t.to_string()
            };
            let u = hkp_lookup(server, "index", &search)?;
            http.send(server, http.client.get(u), MAX_INDEX_ANSWER)
        }
        KeyProtocol::Vks => {
            let u = vks_lookup(server, text)?;
            http.send(server, http.client.get(u), MAX_KEY_ANSWER)
        }
    }
}

/// Publishes `armored` on `server`; the server's words.
pub fn push(server: &Keyserver, armored: &str) -> Result<String> {
    let http = Http::new(server)?;
    let said = match server.protocol {
        KeyProtocol::Hkp => {
            // The form body, encoded as a query string is.
            let mut form = Url::parse("http://form.invalid/").expect("a constant URL parses");
            form.query_pairs_mut().append_pair("keytext", armored);
            let body = form.query().unwrap_or("").to_string();
            let req = http
                .client
                .post(url(server, "/pks/add")?)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body);
            http.send(server, req, MAX_PUSH_ANSWER)?
        }
        KeyProtocol::Vks => {
            let body = serde_json::to_vec(&serde_json::json!({ "keytext": armored }))
                .map_err(|e| fail(server, e.to_string()))?;
            let req = http
                .client
                .post(url(server, "/vks/v1/upload")?)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
            let answer = http.send(server, req, MAX_PUSH_ANSWER)?;
            answer.map(|a| vks_confirm(&http, server, &a))
        }
    };
    let said = said.ok_or_else(|| fail(server, "the keyserver answered 404 Not Found"))?;
    Ok(plain_words(&said))
}

/// A server's answer as one short line: HTML tags dropped, white space collapsed,
/// control characters escaped.
fn plain_words(said: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in said.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' if in_tag => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    printable(&words.join(" ")).chars().take(600).collect()
}

/// After a VKS upload: asks the server to send the confirmation e-mails for the
/// addresses it does not publish yet (`/vks/v1/request-verify` with the upload's
/// token), and says what happened.
fn vks_confirm(http: &Http, server: &Keyserver, answer: &str) -> String {
    let words = vks_upload_words(answer);
    let Ok(v) = serde_json::from_str::<serde_json::Value>(answer) else {
        return words;
    };
    let token = v.get("token").and_then(|t| t.as_str());
    let pending: Vec<&str> = v
        .get("status")
        .and_then(|s| s.as_object())
        .map(|m| {
            m.iter()
                .filter(|(_, s)| s.as_str() == Some("unpublished"))
                .map(|(a, _)| a.as_str())
                .collect()
        })
        .unwrap_or_default();
    let (Some(token), false) = (token, pending.is_empty()) else {
        return words;
    };
    let body = serde_json::json!({ "token": token, "addresses": pending });
    let sent = url(server, "/vks/v1/request-verify").and_then(|u| {
        let req = http
            .client
            .post(u)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        http.send(server, req, MAX_PUSH_ANSWER)
    });
    match sent {
        Ok(Some(_)) => format!(
            "{words}; a confirmation e-mail was requested for {}",
            pending.join(", ")
        ),
        Ok(None) => format!("{words}; asking for the confirmation e-mails found no such service"),
        Err(e) => format!("{words}; asking for the confirmation e-mails failed: {e}"),
    }
}

/// A VKS upload's answer (`key_fpr`, and each address's `status`) in words.
fn vks_upload_words(answer: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(answer) else {
        return answer.to_string();
    };
    let mut out = match v.get("key_fpr").and_then(|f| f.as_str()) {
        Some(f) => format!("key {f} uploaded"),
        None => "uploaded".to_string(),
    };
    if let Some(status) = v.get("status").and_then(|s| s.as_object()) {
        let unpublished: Vec<&str> = status
            .iter()
            .filter(|(_, s)| s.as_str() != Some("published"))
            .map(|(addr, _)| addr.as_str())
            .collect();
        if !unpublished.is_empty() {
            out.push_str(&format!(
                "; the server shows its user IDs ({}) only once each address is confirmed by e-mail (the key is found by its fingerprint at once)",
                unpublished.join(", ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(url: &str) -> Keyserver {
        Keyserver::parse(url, None).unwrap()
    }

    #[test]
    fn requests_are_written_as_each_protocol_wants() {
        let h = server("hkp://127.0.0.1:1");
        assert_eq!(
            hkp_lookup(&h, "index", "Alice <a@b>").unwrap().as_str(),
            "http://127.0.0.1:1/pks/lookup?op=index&options=mr&fingerprint=on&search=Alice+%3Ca%40b%3E"
        );
        let v = server("https://keys.openpgp.org");
        let f = "ab60bf8fd61bb9fe0cafd31dd0e6c4f452a71a51";
        assert_eq!(
            vks_lookup(&v, f).unwrap().as_str(),
            "https://keys.openpgp.org/vks/v1/by-fingerprint/AB60BF8FD61BB9FE0CAFD31DD0E6C4F452A71A51"
        );
        assert_eq!(
            vks_lookup(&v, "0xD0E6C4F452A71A51").unwrap().as_str(),
            "https://keys.openpgp.org/vks/v1/by-keyid/D0E6C4F452A71A51"
        );
        assert_eq!(
            vks_lookup(&v, "a/b@example.org").unwrap().as_str(),
            "https://keys.openpgp.org/vks/v1/by-email/a%2Fb@example.org"
        );
        assert!(vks_lookup(&v, "Alice").is_err());
        assert!(get(&h, "D0E6C4F452A71A51").is_err());
    }

    #[test]
    fn a_vks_upload_answer_is_put_in_words() {
        let w = vks_upload_words(
            r#"{"key_fpr":"AB60","status":{"a@x":"unpublished","b@x":"published"},"token":"t"}"#,
        );
        assert!(w.starts_with("key AB60 uploaded;"), "{w}");
        assert!(w.contains("a@x") && !w.contains("b@x"), "{w}");
        assert_eq!(vks_upload_words("plain"), "plain");
        assert_eq!(
            plain_words("<html><title>x</title>New keys: <br>1 added.<br></body></html>\n"),
            "x New keys: 1 added."
        );
    }
}
