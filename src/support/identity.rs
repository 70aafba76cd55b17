//! Who the user is inside the container: the uid/gid mapping and the `/etc/passwd` and
//! `/etc/group` entries the container sees (the image's own, plus the user's).

#![forbid(unsafe_code)]

use nix::unistd::{Gid, Group, Uid, User};

#[derive(Debug, Clone)]
pub struct Identity {
    /// The caller's ids outside.
    pub uid: u32,
    pub gid: u32,
    /// The ids the caller has inside (its own, or 0 with --fakeroot).
    pub inner_uid: u32,
    pub inner_gid: u32,
    pub name: String,
    pub group_name: String,
    pub gecos: String,
    /// The host's idea of the home directory.
    pub host_home: String,
    pub shell: String,
}

impl Identity {
    pub fn current(fakeroot: bool) -> Identity {
        // Inside the launcher's user namespace (entered early, before a key was
        // read), getuid() is the inside id: the outside one is what was mapped.
        let (uid, gid) = super::userns::outer_ids()
            .map(|(u, g)| (Uid::from_raw(u), Gid::from_raw(g)))
            .unwrap_or_else(|| (Uid::current(), Gid::current()));
        let user = user_entry(uid.as_raw());
        let group = group_entry(gid.as_raw());
        let host_home = std::env::var("HOME")
            .ok()
            .filter(|h| h.starts_with('/'))
            .or_else(|| user.as_ref().map(|u| u.dir.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "/".into());
        Identity {
            uid: uid.as_raw(),
            gid: gid.as_raw(),
            inner_uid: if fakeroot { 0 } else { uid.as_raw() },
            inner_gid: if fakeroot { 0 } else { gid.as_raw() },
            name: user
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_else(|| format!("u{}", uid.as_raw())),
            group_name: group
                .map(|g| g.name)
                .unwrap_or_else(|| format!("g{}", gid.as_raw())),
            gecos: user
                .as_ref()
                .map(|u| u.gecos.to_string_lossy().into_owned())
                .unwrap_or_default(),
            host_home,
            shell: user
                .map(|u| u.shell.to_string_lossy().into_owned())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "/bin/sh".into()),
        }
    }
}

/// The passwd entry of `uid`: the C library's lookup, then, in the static (musl) build,
/// the system's name service through `getent` when that finds nothing. musl's lookup
/// reads /etc/passwd (and asks nscd, where it runs); `getent` goes through the name
/// service switch, so users that come from LDAP or SSSD are found too. A glibc build's
/// own lookup already does that, and skips the second try.
pub fn user_entry(uid: u32) -> Option<User> {
    if let Ok(Some(u)) = User::from_uid(Uid::from_raw(uid)) {
        return Some(u);
    }
    let f = getent_fallback("passwd", uid)?;
    let [name, pw, u, g, gecos, dir, shell] = <[String; 7]>::try_from(f).ok()?;
    Some(User {
        name,
        passwd: std::ffi::CString::new(pw).ok()?,
        uid: Uid::from_raw(u.parse().ok()?),
        gid: Gid::from_raw(g.parse().ok()?),
        gecos: std::ffi::CString::new(gecos).ok()?,
        dir: dir.into(),
        shell: shell.into(),
    })
}

/// The group entry of `gid`, likewise.
pub fn group_entry(gid: u32) -> Option<Group> {
    if let Ok(Some(g)) = Group::from_gid(Gid::from_raw(gid)) {
        return Some(g);
    }
    let f = getent_fallback("group", gid)?;
    let [name, pw, g, members] = <[String; 4]>::try_from(f).ok()?;
    Some(Group {
        name,
        passwd: std::ffi::CString::new(pw).ok()?,
        gid: Gid::from_raw(g.parse().ok()?),
        mem: members
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// [`getent`] where the C library has no name service switch (musl).
fn getent_fallback(db: &str, id: u32) -> Option<Vec<String>> {
    if cfg!(target_env = "musl") {
        getent(db, id)
    } else {
        None
    }
}

/// How long a name service may take to answer before the user is taken as unnamed
/// (an unreachable directory server must not hold every start).
const GETENT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// The fields of `getent DB ID`'s line, for an entry whose id field is `id`. The
/// system's copy only, run with an empty environment (the launcher's may hold key
/// material), and killed after [`GETENT_DEADLINE`].
fn getent(db: &str, id: u32) -> Option<Vec<String>> {
    use std::io::Read;
    let bin = ["/usr/bin/getent", "/bin/getent"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())?;
    let mut child = std::process::Command::new(bin)
        .args([db, &id.to_string()])
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    // The output is drained while waiting (a group with many members can outgrow the
    // pipe), without blocking, so the deadline holds.
    let mut out = child.stdout.take()?;
    let _ = nix::fcntl::fcntl(
        &out,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut bytes = Vec::new();
    let start = std::time::Instant::now();
    let status = loop {
        let _ = out.read_to_end(&mut bytes);
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if start.elapsed() < GETENT_DEADLINE => {
                std::thread::sleep(std::time::Duration::from_micros(200))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    let _ = out.read_to_end(&mut bytes);
    let line = String::from_utf8(bytes).ok()?;
    if !status.success() {
        return None;
    }
    let fields: Vec<String> = line
        .lines()
        .next()?
        .split(':')
        .map(str::to_string)
        .collect();
    // Both databases keep the numeric id in the third field.
    (fields.get(2)?.parse::<u32>().ok()? == id).then_some(fields)
}

fn has_entry(db: &str, id: u32) -> bool {
    db.lines()
        .any(|l| l.split(':').nth(2).and_then(|v| v.parse::<u32>().ok()) == Some(id))
}

fn with_newline(mut s: String) -> String {
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// The image's passwd plus the user's line (when its uid is not there yet).
pub fn passwd(image_passwd: Option<&str>, id: &Identity, home: &str) -> String {
    let mut out = with_newline(image_passwd.unwrap_or("").to_string());
    if id.inner_uid == 0 {
        if !has_entry(&out, 0) {
            out.push_str("root:x:0:0:root:/root:/bin/sh\n");
        }
    } else if !has_entry(&out, id.inner_uid) {
        out.push_str(&format!(
            "{}:x:{}:{}:{}:{}:{}\n",
            id.name, id.inner_uid, id.inner_gid, id.gecos, home, id.shell
        ));
    }
    out
}

/// The image's group file plus the user's primary group.
pub fn group(image_group: Option<&str>, id: &Identity) -> String {
    let mut out = with_newline(image_group.unwrap_or("").to_string());
    if id.inner_gid == 0 {
        if !has_entry(&out, 0) {
            out.push_str("root:x:0:\n");
        }
    } else if !has_entry(&out, id.inner_gid) {
        out.push_str(&format!(
            "{}:x:{}:{}\n",
            id.group_name, id.inner_gid, id.name
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getent_reads_the_name_service_and_checks_the_id() {
        if !["/usr/bin/getent", "/bin/getent"]
            .iter()
            .any(|p| std::path::Path::new(p).is_file())
        {
            eprintln!("SKIP: no getent on this system");
            return;
        }
        let root = getent("passwd", 0).expect("getent passwd 0");
        assert_eq!((root[0].as_str(), root.len()), ("root", 7));
        let group = getent("group", 0).expect("getent group 0");
        assert_eq!(group[0], "root");
        // An id nobody has: no entry, and no made-up one.
        assert_eq!(getent("passwd", 4_000_000_123), None);
        assert_eq!(user_entry(0).map(|u| u.name), Some("root".into()));
        assert_eq!(group_entry(0).map(|g| g.name), Some("root".into()));
    }

    fn id() -> Identity {
        Identity {
            uid: 1000,
            gid: 1000,
            inner_uid: 1000,
            inner_gid: 1000,
            name: "ann".into(),
            group_name: "ann".into(),
            gecos: "Ann".into(),
            host_home: "/home/ann".into(),
            shell: "/bin/bash".into(),
        }
    }

    #[test]
    fn adds_the_user_once() {
        let p = passwd(Some("root:x:0:0:root:/root:/bin/sh"), &id(), "/home/ann");
        assert_eq!(
            p,
            "root:x:0:0:root:/root:/bin/sh\nann:x:1000:1000:Ann:/home/ann:/bin/bash\n"
        );
        assert_eq!(passwd(Some(&p), &id(), "/home/ann"), p);
        let g = group(None, &id());
        assert_eq!(g, "ann:x:1000:ann\n");
        let mut root = id();
        root.inner_uid = 0;
        root.inner_gid = 0;
        assert_eq!(
            passwd(None, &root, "/root"),
            "root:x:0:0:root:/root:/bin/sh\n"
        );
    }
}
