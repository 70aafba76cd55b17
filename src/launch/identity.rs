//! Who the user is inside the container: the uid/gid mapping and the `/etc/passwd` and
//! `/etc/group` entries the container sees (the image's own, plus the user's).

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
        let uid = Uid::current();
        let gid = Gid::current();
        let user = User::from_uid(uid).ok().flatten();
        let group = Group::from_gid(gid).ok().flatten();
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
