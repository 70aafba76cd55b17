//! Human and JSON renderings of a SIF's header and objects. The text forms are the
//! ones siftool prints, column for column, so scripts written against siftool keep
//! working with `veil sif`.

#![forbid(unsafe_code)]

use serde_json::{Value, json};

use super::descriptor::{Descriptor, Extra, Link};
use super::header::{GO_ZERO_TIME, Header};

/// Lines of `Key:<pad>Value`, padded to the longest key plus `pad` spaces, each line
/// prefixed with `indent` (the layout of Go's tabwriter that siftool uses).
fn aligned(rows: &[(&str, String)], indent: &str, pad: usize) -> String {
    let width = rows.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0) + pad;
    let mut out = String::new();
    for (k, v) in rows {
        let key = format!("{k}:");
        out.push_str(&format!("{indent}{key:<width$}{v}\n"));
    }
    out
}

/// A size as siftool prints it: `n B` below 1 KiB, else rounded to the largest binary
/// unit it reaches (`27 KiB`, `2 MiB`).
pub fn human_size(n: i64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n.unsigned_abs() < 1024 {
        return format!("{n} B");
    }
    let mut unit = 0;
    let mut scale = 1024f64;
    while unit + 1 < UNITS.len() && (n.unsigned_abs() as f64) >= scale * 1024.0 {
        scale *= 1024.0;
        unit += 1;
    }
    format!("{} {}", (n as f64 / scale).round() as i64, UNITS[unit])
}

/// `2006-01-02 15:04:05 +0000 UTC`, Go's default rendering of a UTC time.
pub fn format_time(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000 UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `siftool header`.
pub fn header_text(h: &Header) -> String {
    let mut rows: Vec<(&str, String)> = Vec::new();
    let script = h.launch_script_str();
    if !script.is_empty() {
        rows.push(("Launch Script", script.trim_end_matches('\n').to_string()));
    }
    rows.push(("Version", "01".into()));
    if h.arch.is_known() {
        rows.push(("Primary Architecture", h.arch.to_string()));
    }
    if let Some(id) = h.id_string() {
        rows.push(("ID", id));
    }
    if h.created_at != GO_ZERO_TIME {
        rows.push(("Created At", format_time(h.created_at)));
    }
    if h.modified_at != GO_ZERO_TIME {
        rows.push(("Modified At", format_time(h.modified_at)));
    }
    rows.push(("Descriptors Free", h.descriptors_free.to_string()));
    rows.push(("Descriptors Total", h.descriptors_total.to_string()));
    rows.push(("Descriptors Offset", h.descriptors_offset.to_string()));
    rows.push(("Descriptors Size", human_size(h.descriptors_size)));
    rows.push(("Data Offset", h.data_offset.to_string()));
    rows.push(("Data Size", human_size(h.data_size)));
    aligned(&rows, "", 1)
}

/// The TYPE column of `siftool list`.
fn type_column(d: &Descriptor) -> String {
    match d.extra() {
        Extra::Partition { fs, part, arch } => format!("{} ({fs}/{part}/{arch})", d.data_type),
        Extra::Signature { hash, .. } => format!("{} ({hash})", d.data_type),
        Extra::CryptoMessage { format, message } => format!("{} ({format}/{message})", d.data_type),
        Extra::Sbom { format } => format!("{} ({format})", d.data_type),
        _ => d.data_type.to_string(),
    }
}

const RULE: &str = "------------------------------------------------------------------------------";

/// `siftool list`.
pub fn list_text<'a>(objects: impl Iterator<Item = &'a Descriptor>) -> String {
    let mut out =
        format!("{RULE}\nID   |GROUP   |LINK    |SIF POSITION (start-end)  |TYPE\n{RULE}\n");
    for d in objects {
        let group = match d.group() {
            0 => "NONE".to_string(),
            g => g.to_string(),
        };
        let link = match d.link() {
            Link::None => "NONE".to_string(),
            Link::Object(id) => id.to_string(),
            Link::Group(g) => format!("{g:<3} (G)"),
        };
        let (start, end) = d.range();
        let pos = format!("|{start}-{end}");
        out.push_str(&format!(
            "{:<4} |{group:<7} |{link:<7} {pos:<26} |{}\n",
            d.id,
            type_column(d)
        ));
    }
    out
}

/// `siftool info`.
pub fn info_text(d: &Descriptor) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("Data Type", d.data_type.to_string()),
        ("ID", d.id.to_string()),
        (
            "Group ID",
            match d.group() {
                0 => "NONE".into(),
                g => g.to_string(),
            },
        ),
        (
            "Linked ID",
            match d.link() {
                Link::None => "NONE".into(),
                Link::Object(id) => id.to_string(),
                Link::Group(g) => format!("{g} (G)"),
            },
        ),
        ("Offset", d.offset.to_string()),
        ("Size", d.size.to_string()),
    ];
    if d.created_at != GO_ZERO_TIME {
        rows.push(("Created At", format_time(d.created_at)));
    }
    if d.modified_at != GO_ZERO_TIME {
        rows.push(("Modified At", format_time(d.modified_at)));
    }
    let name = d.name_str();
    if !name.is_empty() {
        rows.push(("Name", name));
    }
    match d.extra() {
        Extra::Partition { fs, part, arch } => {
            rows.push(("Filesystem Type", fs.to_string()));
            rows.push(("Partition Type", part.to_string()));
            rows.push(("Architecture", arch.to_string()));
        }
        Extra::Signature { hash, fingerprint } => {
            rows.push(("Hash Type", hash.to_string()));
            if let Some(fp) = fingerprint {
                rows.push(("Entity", hex_upper(&fp)));
            }
        }
        Extra::CryptoMessage { format, message } => {
            rows.push(("Format Type", format.to_string()));
            rows.push(("Message Type", message.to_string()));
        }
        Extra::Sbom { format } => rows.push(("Format", format.to_string())),
        Extra::OciDigest(digest) => rows.push(("Digest", digest)),
        Extra::None => {}
    }
    aligned(&rows, "  ", 2)
}

pub fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn time_json(t: i64) -> Value {
    if t == GO_ZERO_TIME {
        Value::Null
    } else {
        json!(t)
    }
}

/// The header as JSON. Times are unix seconds, `null` for the Go zero time.
pub fn header_json(h: &Header) -> Value {
    json!({
        "launch_script": h.launch_script_str(),
        "version": "01",
        "arch": h.arch.to_string(),
        "id": h.id_string(),
        "created_at": time_json(h.created_at),
        "modified_at": time_json(h.modified_at),
        "descriptors_free": h.descriptors_free,
        "descriptors_total": h.descriptors_total,
        "descriptors_offset": h.descriptors_offset,
        "descriptors_size": h.descriptors_size,
        "data_offset": h.data_offset,
        "data_size": h.data_size,
    })
}

/// One object as JSON.
pub fn object_json(d: &Descriptor) -> Value {
    let mut v = json!({
        "id": d.id,
        "type": d.data_type.to_string(),
        "type_code": d.data_type.code(),
        "group": (d.group() != 0).then_some(d.group()),
        "link": match d.link() {
            Link::None => Value::Null,
            Link::Object(id) => json!({"object": id}),
            Link::Group(g) => json!({"group": g}),
        },
        "offset": d.offset,
        "size": d.size,
        "size_with_padding": d.size_with_padding,
        "created_at": time_json(d.created_at),
        "modified_at": time_json(d.modified_at),
        "name": d.name_str(),
    });
    let extra = match d.extra() {
        Extra::Partition { fs, part, arch } => json!({
            "fs": fs.to_string(), "fs_code": fs.code(),
            "partition_type": part.to_string(), "partition_type_code": part.code(),
            "arch": arch.to_string(),
        }),
        Extra::Signature { hash, fingerprint } => json!({
            "hash": hash.to_string(),
            "entity": fingerprint.map(|f| hex_upper(&f)),
        }),
        Extra::CryptoMessage { format, message } => json!({
            "format": format.to_string(), "message": message.to_string(),
        }),
        Extra::Sbom { format } => json!({ "format": format.to_string() }),
        Extra::OciDigest(digest) => json!({ "digest": digest }),
        Extra::None => Value::Null,
    };
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_like_siftool() {
        // Measured with siftool 2.8.3.
        for (n, s) in [
            (1023, "1023 B"),
            (1024, "1 KiB"),
            (1535, "1 KiB"),
            (1536, "2 KiB"),
            (2560, "3 KiB"),
            (28080, "27 KiB"),
            (1_048_064, "1024 KiB"),
            (1_572_863, "1 MiB"),
            (1_572_864, "2 MiB"),
            (0, "0 B"),
        ] {
            assert_eq!(human_size(n), s, "{n}");
        }
    }

    #[test]
    fn times_like_go() {
        assert_eq!(format_time(1_593_475_316), "2020-06-30 00:01:56 +0000 UTC");
        assert_eq!(format_time(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(format_time(GO_ZERO_TIME), "0001-01-01 00:00:00 +0000 UTC");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00 +0000 UTC");
    }
}
