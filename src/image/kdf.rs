//! How much key-derivation work unlocking an image may cost.
//!
//! A LUKS2 header is not authenticated: a hostile one can ask for 1000 argon2
//! passes over 4 GiB, or billions of PBKDF2 iterations, in each of 32 keyslots.
//! Every keyslot is checked against a cap before its KDF runs (see
//! `veil_fusefs::luks2::KdfLimits` for the defaults and why they are what they are).
//! `--max-kdf-cost FACTOR` (or `VEIL_MAX_KDF_COST`) multiplies the caps, for an
//! image the user trusts that was made with unusually high costs.

#![forbid(unsafe_code)]

use std::sync::OnceLock;

use veil_fusefs::luks2::{self, KdfLimits, UnlockOptions};

/// The factor given on the command line, if any (set once, by the CLI).
static FACTOR: OnceLock<f64> = OnceLock::new();

/// The flag and the variable that raise the caps, as messages name them.
pub const FLAG: &str = "--max-kdf-cost";
pub const VAR: &str = "VEIL_MAX_KDF_COST";

/// Parses a factor: a positive number.
pub fn parse_factor(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
        _ => Err(format!(
            "{s:?} is not a positive number (a factor of the default caps, e.g. 4)"
        )),
    }
}

/// Sets the factor for this process (the first call wins).
pub fn set_factor(f: Option<f64>) {
    if let Some(f) = f {
        let _ = FACTOR.set(f);
    }
}

fn factor() -> f64 {
    FACTOR.get().copied().unwrap_or(1.0)
}

fn scaled(n: u64, f: f64) -> u64 {
    let v = (n as f64 * f).round();
    if v >= u64::MAX as f64 {
        u64::MAX
    } else {
        (v as u64).max(1)
    }
}

/// The KDF limits in force.
pub fn limits() -> KdfLimits {
    let d = KdfLimits::default();
    let f = factor();
    KdfLimits {
        max_pbkdf2_iterations: scaled(d.max_pbkdf2_iterations, f),
        max_argon2_work: scaled(d.max_argon2_work, f),
        ..d
    }
}

/// The caps of a gocryptfs volume's scrypt: 1 GiB of memory and 8 GiB of work
/// (gocryptfs's default cost needs 64 MiB of both), times the factor, and half the
/// memory available now.
pub fn gocryptfs_limits() -> veil_fusefs::gocryptfs::UnlockLimits {
    veil_fusefs::gocryptfs::UnlockLimits {
        max_memory: scaled(1 << 30, factor()),
        max_work: scaled(8 << 30, factor()),
        check_available_memory: true,
    }
}

/// A gocryptfs error as the user reads it: a cap's, with the flag that raises it.
pub fn gocryptfs_text(e: &veil_fusefs::gocryptfs::Error) -> String {
    match e {
        veil_fusefs::gocryptfs::Error::KdfTooCostly {
            need_mib,
            limit_mib,
            why,
        } if !why.contains("available") => {
            let need =
                (*need_mib as f64 / (*limit_mib).max(1) as f64 * factor() * 10.0).ceil() / 10.0;
            format!(
                "{e}: a hostile configuration, or made with unusual costs; if you trust the image, allow it with {FLAG} {need} (or {VAR}={need})"
            )
        }
        e => e.to_string(),
    }
}

/// Unlock options with the limits in force.
pub fn unlock_options() -> UnlockOptions {
    UnlockOptions {
        limits: limits(),
        ..Default::default()
    }
}

/// A LUKS2 error as one line; a keyslot over the cost cap says how to allow it.
pub fn luks_text(e: &luks2::Error) -> String {
    let ratio = match e {
        luks2::Error::KdfWorkTooHigh { value, max, .. } => *value as f64 / (*max as f64).max(1.0),
        luks2::Error::KdfBudgetSpent { value, max, .. } => value / max.max(f64::MIN_POSITIVE),
        e => return e.to_string(),
    };
    let need = factor() * ratio;
    // Rounded up to a number that reads well.
    let need = if need < 10.0 {
        (need * 10.0).ceil() / 10.0
    } else {
        need.ceil()
    };
    format!(
        "{e}: a hostile header, or made with unusual costs; if you trust the image, allow it with {FLAG} {need} (or {VAR}={need})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors() {
        assert_eq!(parse_factor("4"), Ok(4.0));
        assert_eq!(parse_factor("0.5"), Ok(0.5));
        for bad in ["0", "-1", "x", "inf", "NaN", ""] {
            assert!(parse_factor(bad).is_err(), "{bad}");
        }
        assert_eq!(scaled(1 << 25, 2.0), 1 << 26);
        assert_eq!(scaled(1 << 25, 1e300), u64::MAX);
        assert_eq!(scaled(10, 1e-9), 1);
    }

    #[test]
    fn the_message_names_the_flag_and_a_factor_that_is_enough() {
        let e = luks2::Error::KdfWorkTooHigh {
            slot: 3,
            cost: "pbkdf2-sha256 with 50000000 iterations".into(),
            limit: "33554432 iterations".into(),
            value: 50_000_000,
            max: 33_554_432,
        };
        let t = luks_text(&e);
        assert_eq!(
            t,
            "keyslot 3: pbkdf2-sha256 with 50000000 iterations, more than the limit of 33554432 iterations: a hostile header, or made with unusual costs; if you trust the image, allow it with --max-kdf-cost 1.5 (or VEIL_MAX_KDF_COST=1.5)"
        );
        assert!(!t.contains('\n'));
    }
}
