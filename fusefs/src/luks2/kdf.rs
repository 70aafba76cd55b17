//! Keyslot KDFs (PBKDF2, Argon2i, Argon2id): limits, memory check, derivation and
//! cryptsetup-like calibration for new keyslots.

#![forbid(unsafe_code)]

use std::time::Instant;

use zeroize::Zeroizing;

use super::error::{Error, Result};
use super::hash::Hash;
use super::kdf_memory::KdfMemory;
use crate::memory::available_bytes;

/// Which Argon2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Argon2Variant {
    Argon2i,
    Argon2id,
}

impl Argon2Variant {
    pub fn name(self) -> &'static str {
        match self {
            Argon2Variant::Argon2i => "argon2i",
            Argon2Variant::Argon2id => "argon2id",
        }
    }
}

/// A keyslot's KDF with its costs, as stored in the JSON metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KdfParams {
    Pbkdf2 {
        /// Hash name as in the metadata (`sha256`, `sha1`, `sha512`, …).
        hash: String,
        iterations: u32,
    },
    Argon2 {
        variant: Argon2Variant,
        /// Time cost (passes).
        time: u32,
        /// Memory cost in KiB.
        memory_kib: u32,
        /// Lanes, computed on that many threads.
        cpus: u32,
    },
}

impl KdfParams {
    /// The LUKS2 `kdf.type` string.
    pub fn type_name(&self) -> &'static str {
        match self {
            KdfParams::Pbkdf2 { .. } => "pbkdf2",
            KdfParams::Argon2 { variant, .. } => variant.name(),
        }
    }

    /// Bytes of memory a derivation allocates (argon2), 0 for pbkdf2.
    pub fn memory_bytes(&self) -> u64 {
        match self {
            KdfParams::Pbkdf2 { .. } => 0,
            KdfParams::Argon2 { memory_kib, .. } => u64::from(*memory_kib) * 1024,
        }
    }

    /// One try's work in units of the per-keyslot cap of `limits` (1.0 = at the cap).
    pub fn work_share(&self, limits: &KdfLimits) -> f64 {
        let share = |v: u64, max: u64| v as f64 / max.max(1) as f64;
        match *self {
            KdfParams::Pbkdf2 { iterations, .. } => {
                share(iterations.into(), limits.max_pbkdf2_iterations)
            }
            KdfParams::Argon2 {
                time, memory_kib, ..
            } => share(
                u64::from(time) * u64::from(memory_kib),
                limits.max_argon2_work,
            ),
        }
    }

    /// Checks the costs against `limits` (for keyslot `slot`), then, for argon2,
    /// against the memory the system can give right now.
    pub fn check(&self, slot: u32, limits: &KdfLimits) -> Result<()> {
        let over = |what, value: u32, limit: u32| {
            if value > limit {
                Err(Error::KdfCostTooHigh {
                    slot,
                    what,
                    value: value.into(),
                    limit: limit.into(),
                })
            } else {
                Ok(())
            }
        };
        match *self {
            KdfParams::Pbkdf2 {
                ref hash,
                iterations,
            } => {
                if u64::from(iterations) > limits.max_pbkdf2_iterations {
                    return Err(Error::KdfWorkTooHigh {
                        slot,
                        cost: format!("pbkdf2-{hash} with {iterations} iterations"),
                        limit: format!("{} iterations", limits.max_pbkdf2_iterations),
                        value: iterations.into(),
                        max: limits.max_pbkdf2_iterations,
                    });
                }
                if iterations == 0 {
                    return Err(Error::meta(format!(
                        "keyslot {slot}: pbkdf2 iterations is 0"
                    )));
                }
            }
            KdfParams::Argon2 {
                time,
                memory_kib,
                cpus,
                ..
            } => {
                over("time", time, limits.max_argon2_time)?;
                over("memory (KiB)", memory_kib, limits.max_argon2_memory_kib)?;
                over("cpus", cpus, limits.max_argon2_cpus)?;
                if time == 0 || cpus == 0 || u64::from(memory_kib) < 8 * u64::from(cpus) {
                    return Err(Error::meta(format!(
                        "keyslot {slot}: argon2 needs time ≥ 1, cpus ≥ 1 and memory ≥ 8 KiB per cpu"
                    )));
                }
                let work = u64::from(time) * u64::from(memory_kib);
                if work > limits.max_argon2_work {
                    return Err(Error::KdfWorkTooHigh {
                        slot,
                        cost: format!(
                            "{}, {time} passes over {} = {}·passes",
                            self.type_name(),
                            kib_text(memory_kib.into()),
                            kib_text(work)
                        ),
                        limit: format!("{}·passes", kib_text(limits.max_argon2_work)),
                        value: work,
                        max: limits.max_argon2_work,
                    });
                }
                if limits.check_available_memory {
                    check_memory(self.memory_bytes())?;
                }
            }
        }
        Ok(())
    }

    /// Derives `out.len()` bytes from the passphrase and salt. Costs must have been
    /// checked with [`KdfParams::check`].
    pub fn derive(&self, passphrase: &[u8], salt: &[u8], out: &mut [u8]) -> Result<()> {
        match self {
            KdfParams::Pbkdf2 { hash, iterations } => {
                let h = Hash::from_name(hash)
                    .ok_or_else(|| Error::Unsupported(format!("pbkdf2 hash \"{hash}\"")))?;
                h.pbkdf2(passphrase, salt, *iterations, out);
                Ok(())
            }
            KdfParams::Argon2 {
                variant,
                time,
                memory_kib,
                cpus,
            } => {
                let alg = match variant {
                    Argon2Variant::Argon2i => argon2::Algorithm::Argon2i,
                    Argon2Variant::Argon2id => argon2::Algorithm::Argon2id,
                };
                let params = argon2::Params::new(*memory_kib, *time, *cpus, Some(out.len()))
                    .map_err(Error::Argon2Params)?;
                // LUKS2 uses Argon2 version 0x13 (1.3), no secret, no associated data.
                // With the crate's `parallel` feature the lanes run on rayon threads.
                let blocks = params.block_count();
                let argon = argon2::Argon2::new(alg, argon2::Version::V0x13, params);
                let mut memory =
                    KdfMemory::new(blocks).ok_or_else(|| Error::InsufficientMemory {
                        needed: self.memory_bytes(),
                        available: available_bytes().unwrap_or(0),
                    })?;
                with_transient_threads(*cpus as usize, || {
                    argon.hash_password_into_with_memory(passphrase, salt, out, memory.blocks())
                })
                .map_err(|e| match e {
                    argon2::Error::OutOfMemory => Error::InsufficientMemory {
                        needed: self.memory_bytes(),
                        available: available_bytes().unwrap_or(0),
                    },
                    e => Error::Argon2(e),
                })
            }
        }
    }
}

/// Runs `f` on a rayon pool of `n` threads that is gone when this returns.
///
/// The launcher must still be single-threaded when it calls
/// `unshare(CLONE_NEWUSER)` after unlocking (the kernel refuses a multi-threaded
/// caller), so the argon2 lanes cannot leave rayon's global pool behind. The pool's
/// threads are joined, so that each has finished exiting (its thread-local storage
/// freed too) when this returns.
fn with_transient_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
    let mut threads = Vec::new();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .exit_handler(|_| {
            // The lanes' blocks and the final blake2 state passed through this
            // thread's stack; its stack may be cached and reused by a later thread.
            crate::secret::scrub_stack();
        })
        .spawn_handler(|worker| {
            let t = std::thread::Builder::new()
                .name(format!("veil-argon2-{}", worker.index()))
                .spawn(move || worker.run())?;
            threads.push(t);
            Ok(())
        })
        .build();
    let Ok(pool) = pool else {
        // No threads to be had (those that did start end as the failed pool goes):
        // the lanes run on this thread, in a pool of this thread alone, so that
        // argon2's parallel iterators do not start rayon's global pool instead.
        for t in threads {
            let _ = t.join();
        }
        let alone = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .use_current_thread()
            .build();
        return match alone {
            Ok(p) => p.install(f),
            Err(_) => f(),
        };
    };
    let out = pool.install(|| {
        let out = f();
        crate::secret::scrub_stack();
        out
    });
    drop(pool);
    for t in threads {
        let _ = t.join();
    }
    out
}

/// Fails with [`Error::InsufficientMemory`] when `needed` bytes (plus a margin for
/// everything else) exceed what the system reports as available.
pub fn check_memory(needed: u64) -> Result<()> {
    if let Some(available) = available_bytes() {
        // 16 MiB of slack for the rest of the process.
        if needed.saturating_add(16 << 20) > available {
            return Err(Error::InsufficientMemory { needed, available });
        }
    }
    Ok(())
}

/// The default cap on a keyslot's PBKDF2 iterations: 2^25 (33.5 million).
/// cryptsetup's 2-second benchmark writes 1–6 million on current x86 cores (a few
/// hundred thousand on small ARM boards), and Apptainer and SingularityCE use
/// cryptsetup's defaults: the cap is 5–30 times that, 10–20 s on one core here.
pub const DEFAULT_MAX_PBKDF2_ITERATIONS: u64 = 1 << 25;

/// The default cap on a keyslot's argon2 work, passes × KiB: 32 GiB·passes (2^25).
/// cryptsetup's default keyslot (2 s, at most 1 GiB and 4 lanes) is 4–12 GiB·passes
/// (4 passes over 1 GiB where memory is plentiful, a few more on fast machines);
/// its own maximum memory, 4 GiB, fits 8 passes. A hostile header's 1000 passes
/// over 4 GiB, 125 times the cap, would take hours.
pub const DEFAULT_MAX_ARGON2_WORK: u64 = 1 << 25;

/// The default budget of one unlock, all keyslots together: four keyslots at the
/// cap. 32 keyslots just under the caps would otherwise cost 32 times one (over an
/// hour of argon2 on a small machine); cryptsetup's default keyslots are a tenth
/// of the cap or less, so a volume with many of them still has room.
pub const DEFAULT_MAX_TOTAL_WORK: f64 = 4.0;

/// `n` KiB in the largest whole unit (KiB, MiB or GiB) that divides it, else MiB.
pub fn kib_text(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} GiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} MiB", n >> 10)
    } else if n >= 1 << 10 {
        format!("{:.1} MiB", n as f64 / 1024.0)
    } else {
        format!("{n} KiB")
    }
}

/// Upper bounds on what a keyslot may make us compute. The header is not
/// authenticated, so these protect against hostile images.
#[derive(Debug, Clone)]
pub struct KdfLimits {
    /// Per keyslot, and for the digest (which every try computes too).
    pub max_pbkdf2_iterations: u64,
    /// Per keyslot: argon2 passes × memory in KiB, the work one try costs.
    pub max_argon2_work: u64,
    /// For one unlock, all keyslots tried together, in units of the per-keyslot
    /// caps (a keyslot at the pbkdf2 or argon2 cap, with its digest, is about 1).
    pub max_total_work: f64,
    pub max_argon2_time: u32,
    /// cryptsetup's own maximum is 4 GiB (4194304 KiB).
    pub max_argon2_memory_kib: u32,
    pub max_argon2_cpus: u32,
    /// Compare argon2 memory with MemAvailable and the cgroup limit first.
    pub check_available_memory: bool,
}

impl Default for KdfLimits {
    fn default() -> Self {
        KdfLimits {
            max_pbkdf2_iterations: DEFAULT_MAX_PBKDF2_ITERATIONS,
            max_argon2_work: DEFAULT_MAX_ARGON2_WORK,
            max_total_work: DEFAULT_MAX_TOTAL_WORK,
            max_argon2_time: 1000,
            max_argon2_memory_kib: 4 * 1024 * 1024,
            max_argon2_cpus: 64,
            check_available_memory: true,
        }
    }
}

/// Which KDF a new keyslot uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdfKind {
    Argon2id,
    Argon2i,
    Pbkdf2,
}

/// How a new keyslot's KDF costs are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KdfChoice {
    /// Exactly these costs (tests, reproducible builds).
    Fixed(KdfParams),
    /// Benchmark like cryptsetup: argon2 raises memory first (up to
    /// `max_memory_kib`, and at most half of the available memory), then time;
    /// pbkdf2 picks iterations. Aim for `target_ms` per unlock.
    Calibrated {
        kind: KdfKind,
        target_ms: u32,
        max_memory_kib: u32,
        max_cpus: u32,
    },
}

impl Default for KdfChoice {
    /// cryptsetup's luksFormat defaults: argon2id, 2 s, ≤ 1 GiB, ≤ 4 threads.
    fn default() -> Self {
        KdfChoice::Calibrated {
            kind: KdfKind::Argon2id,
            target_ms: 2000,
            max_memory_kib: 1024 * 1024,
            max_cpus: 4,
        }
    }
}

/// cryptsetup's minimums.
const MIN_ARGON2_TIME: u32 = 4;
const MIN_ARGON2_MEMORY_KIB: u32 = 32;
const MIN_PBKDF2_ITERATIONS: u32 = 1000;

impl KdfChoice {
    /// Resolves to concrete costs, benchmarking if asked to. `hash` is the pbkdf2 hash.
    pub fn resolve(&self, hash: Hash) -> Result<KdfParams> {
        match self {
            KdfChoice::Fixed(p) => Ok(p.clone()),
            KdfChoice::Calibrated {
                kind,
                target_ms,
                max_memory_kib,
                max_cpus,
            } => {
                let target = f64::from((*target_ms).max(1));
                match kind {
                    KdfKind::Pbkdf2 => Ok(KdfParams::Pbkdf2 {
                        hash: hash.name().to_string(),
                        iterations: pbkdf2_iterations_for(hash, target),
                    }),
                    KdfKind::Argon2i | KdfKind::Argon2id => {
                        let variant = if *kind == KdfKind::Argon2i {
                            Argon2Variant::Argon2i
                        } else {
                            Argon2Variant::Argon2id
                        };
                        calibrate_argon2(variant, target, *max_memory_kib, *max_cpus)
                    }
                }
            }
        }
    }
}

/// PBKDF2 iterations that take about `target_ms` here (at least 1000).
pub fn pbkdf2_iterations_for(hash: Hash, target_ms: f64) -> u32 {
    let mut out = Zeroizing::new([0u8; 64]);
    let salt = [0u8; 32];
    let mut n: u32 = 10_000;
    loop {
        let t = Instant::now();
        hash.pbkdf2(b"benchmark", &salt, n, &mut out[..32]);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if ms >= 50.0 || n >= 1 << 28 {
            let per_ms = f64::from(n) / ms.max(0.001);
            let it = (per_ms * target_ms).min(f64::from(u32::MAX));
            return (it as u32).max(MIN_PBKDF2_ITERATIONS);
        }
        n = n.saturating_mul(4);
    }
}

fn calibrate_argon2(
    variant: Argon2Variant,
    target_ms: f64,
    max_memory_kib: u32,
    max_cpus: u32,
) -> Result<KdfParams> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let cpus = threads.min(max_cpus).clamp(1, 4);
    // Never more than half of what is available now (cryptsetup: half of RAM).
    let avail_kib = available_bytes().map_or(u64::MAX, |b| b / 1024 / 2);
    let cap = u64::from(max_memory_kib)
        .min(avail_kib)
        .max(u64::from(MIN_ARGON2_MEMORY_KIB).max(8 * u64::from(cpus))) as u32;
    // One measurement at a moderate size gives the cost of a KiB-pass.
    let probe_mem = cap.min(64 * 1024);
    let probe = KdfParams::Argon2 {
        variant,
        time: MIN_ARGON2_TIME,
        memory_kib: probe_mem,
        cpus,
    };
    let mut out = Zeroizing::new([0u8; 64]);
    let t = Instant::now();
    probe.derive(b"benchmark", &[0u8; 32], &mut out[..])?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let per_kib_pass = ms.max(0.001) / (f64::from(probe_mem) * f64::from(MIN_ARGON2_TIME));
    // Raise memory first at the minimum time, then time.
    let mem_for_target = target_ms / (per_kib_pass * f64::from(MIN_ARGON2_TIME));
    let (memory_kib, time) = if mem_for_target < f64::from(cap) {
        let m = (mem_for_target as u32).max(MIN_ARGON2_MEMORY_KIB.max(8 * cpus));
        (m, MIN_ARGON2_TIME)
    } else {
        let t = (target_ms / (per_kib_pass * f64::from(cap))) as u32;
        (cap, t.clamp(MIN_ARGON2_TIME, 1000))
    };
    Ok(KdfParams::Argon2 {
        variant,
        time,
        memory_kib,
        cpus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// RFC 9106 §5.3 (Argon2id, version 0x13) uses a secret and associated data,
    /// which LUKS2 does not; this checks the same algorithm through the path LUKS2
    /// uses against python3-argon2 (libargon2), which the interop tests also rely on.
    #[test]
    fn argon2_version_0x13_matches_libargon2() {
        let p = KdfParams::Argon2 {
            variant: Argon2Variant::Argon2id,
            time: 3,
            memory_kib: 64,
            cpus: 2,
        };
        let mut out = [0u8; 32];
        p.derive(b"password", b"somesaltsomesalt", &mut out)
            .unwrap();
        let script = "import argon2.low_level as l,sys;sys.stdout.write(l.hash_secret_raw(b'password',b'somesaltsomesalt',3,64,2,32,l.Type.ID,0x13).hex())";
        match std::process::Command::new("/usr/bin/python3")
            .args(["-c", script])
            .output()
        {
            Ok(o) if o.status.success() => {
                assert_eq!(hex(&out), String::from_utf8_lossy(&o.stdout));
            }
            _ => eprintln!("SKIP: python3-argon2 not available for the cross-check"),
        }
        // Version 0x10 gives a different result: the version is really applied.
        let params = argon2::Params::new(64, 3, 2, Some(32)).unwrap();
        let mut old = [0u8; 32];
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x10, params)
            .hash_password_into(b"password", b"somesaltsomesalt", &mut old)
            .unwrap();
        assert_ne!(old, out);
    }

    #[test]
    fn absurd_costs_are_refused_before_any_work() {
        let l = KdfLimits::default();
        let big = KdfParams::Argon2 {
            variant: Argon2Variant::Argon2id,
            time: 4,
            memory_kib: 64 * 1024 * 1024,
            cpus: 1,
        };
        assert!(matches!(
            big.check(3, &l),
            Err(Error::KdfCostTooHigh { slot: 3, .. })
        ));
        let many = KdfParams::Pbkdf2 {
            hash: "sha256".into(),
            iterations: u32::MAX,
        };
        assert!(matches!(
            many.check(0, &l),
            Err(Error::KdfWorkTooHigh { slot: 0, .. })
        ));
    }
}
