//! Keeping the worker's secrets from its handlers: `--run-as USER[:GROUP]` and the non-dumpable
//! worker.
//!
//! ```text
//!  cronq worker: root, or CAP_SETUID + CAP_SETGID + CAP_KILL; non-dumpable, so its
//!  │             /proc/<pid>/{environ,mem,fd…} are root's: no ptrace, no core dump
//!  │ spawn: setgroups([]), setgid(GROUP), setuid(USER); ambient capabilities cleared
//!  ▼
//!  handler: USER, GROUP, no other groups, no capabilities; SIGTERM/SIGKILL at its timeout
//! ```
//!
//! A handler's environment holds none of the worker's variables ([`ChildEnv`]), but a child running
//! as the worker's own user could still read the worker's `/proc/<pid>/environ` and memory, and
//! every file the worker can read (`--sasl-password-file`, `--ssl-key`). [`set_non_dumpable`]
//! closes the first: `/proc/<pid>` of a non-dumpable process belongs to root, and only a process
//! with `CAP_SYS_PTRACE` (root's children, unless they run under `--run-as`) may read it.
//! [`RunAs`] closes the second: handlers run as another user, with its group and no supplementary
//! groups.
//!
//! [`ChildEnv`]: super::executor::ChildEnv

use std::fmt;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

/// `CAP_KILL`'s bit in the capability sets: signalling a child of another user (the timeout's
/// SIGTERM and SIGKILL to its process group).
const CAP_KILL: u32 = 5;
/// `CAP_SETGID`'s bit: `setgroups` and `setgid`.
const CAP_SETGID: u32 = 6;
/// `CAP_SETUID`'s bit: `setuid`.
const CAP_SETUID: u32 = 7;

/// The user and group handlers run as (`--run-as`), resolved when the flag is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user id.
    pub uid: u32,
    /// The group id: the one given, else the user's primary group.
    pub gid: u32,
    /// The user's name, or its number when the user database has no entry for it.
    pub user: String,
    /// The group's name, or its number.
    pub group: String,
    /// The user's home directory from the user database: the handlers' `HOME`.
    pub home: Option<PathBuf>,
}

/// Why `--run-as` cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunAsError {
    /// Not `USER` or `USER:GROUP`.
    #[error("{text:?} is not USER or USER:GROUP ({reason})")]
    Malformed {
        /// As given.
        text: String,
        /// What is missing.
        reason: &'static str,
    },
    /// No such user name.
    #[error("unknown user {name:?}: the user database has no such user")]
    UnknownUser {
        /// As given.
        name: String,
    },
    /// No such group name.
    #[error("unknown group {name:?}: the group database has no such group")]
    UnknownGroup {
        /// As given.
        name: String,
    },
    /// A numeric id beyond what an id can be.
    #[error("{what} {text:?} is out of range 1-4294967294")]
    OutOfRange {
        /// `uid` or `gid`.
        what: &'static str,
        /// As given.
        text: String,
    },
    /// Root: handlers would keep every right the worker should keep from them.
    #[error("{what} 0 is root's: handlers would keep root's rights; name an unprivileged user and group")]
    Root {
        /// `uid` or `gid`.
        what: &'static str,
    },
    /// A numeric user with no entry in the user database, and no group given.
    #[error("uid {uid} has no entry in the user database, so its group is unknown: give it, as {uid}:GROUP")]
    NoGroup {
        /// The user id.
        uid: u32,
    },
    /// The user or group database could not be read.
    #[error("looking up {what} {name:?}: {source}")]
    Lookup {
        /// `user` or `group`.
        what: &'static str,
        /// As given.
        name: String,
        /// Why.
        source: nix::Error,
    },
    /// The worker runs as that very user: its handlers could read its files.
    #[error("{user} (uid {uid}) is this worker's own user: handlers under it could still read the worker's files; name another user")]
    SameUser {
        /// The user.
        user: String,
        /// Its id.
        uid: u32,
    },
    /// The worker may not change a child's user.
    #[error("handlers cannot run as {user}: this worker (uid {uid}) cannot switch users; run it as root or give it CAP_SETUID, CAP_SETGID and CAP_KILL (missing: {missing})")]
    CannotSwitch {
        /// The `--run-as` user.
        user: String,
        /// The worker's effective uid.
        uid: u32,
        /// The capabilities it lacks.
        missing: String,
    },
    /// A handler the `--run-as` user could not start.
    #[error("{path} (mode {mode:04o}, owner uid {owner}, group gid {group}) cannot be run by {user}: it needs {need} permission for that user (e.g. `chmod 0755 {path}`)")]
    HandlerNotRunnable {
        /// The handler.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Its owner.
        owner: u32,
        /// Its group.
        group: u32,
        /// The `--run-as` user.
        user: String,
        /// `execute`, or `read and execute` for a script.
        need: &'static str,
    },
    /// The handlers directory could not be read.
    #[error("{path}: {source}")]
    Unreadable {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `/proc/self/status` gave no effective capability set.
    #[error("cannot read this worker's capabilities from /proc/self/status: {0}")]
    Capabilities(std::io::Error),
    /// `prctl(PR_SET_DUMPABLE, 0)` failed.
    #[error("cannot make the worker non-dumpable (prctl PR_SET_DUMPABLE): {0}")]
    NonDumpable(nix::Error),
}

impl fmt::Display for RunAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} (uid {}, gid {})",
            self.user, self.group, self.uid, self.gid
        )
    }
}

/// A numeric id: digits only, 1 to 2^32 - 2 (2^32 - 1 is `(uid_t) -1`, "no change"); 0 is root's.
fn numeric_id(what: &'static str, text: &str) -> Option<Result<u32, RunAsError>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(match text.parse::<u32>() {
        Ok(0) => Err(RunAsError::Root { what }),
        Ok(id) if id != u32::MAX => Ok(id),
        _ => Err(RunAsError::OutOfRange {
            what,
            text: text.to_string(),
        }),
    })
}

impl RunAs {
    /// `USER` or `USER:GROUP`, each a name or a numeric id, looked up in the user and group
    /// databases now. `USER` alone runs under the user's primary group.
    pub fn parse(text: &str) -> Result<RunAs, RunAsError> {
        let malformed = |reason| RunAsError::Malformed {
            text: text.to_string(),
            reason,
        };
        let (user_part, group_part) = match text.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (text, None),
        };
        if user_part.is_empty() {
            return Err(malformed("no user before ':'"));
        }
        if group_part == Some("") {
            return Err(malformed("no group after ':'"));
        }
        let lookup = |what, name: &str| {
            let name = name.to_string();
            move |source| RunAsError::Lookup { what, name, source }
        };
        let (uid, entry) = match numeric_id("uid", user_part) {
            Some(uid) => {
                let uid = uid?;
                let entry =
                    User::from_uid(Uid::from_raw(uid)).map_err(lookup("user", user_part))?;
                (uid, entry)
            }
            None => {
                let entry = User::from_name(user_part)
                    .map_err(lookup("user", user_part))?
                    .ok_or_else(|| RunAsError::UnknownUser {
                        name: user_part.to_string(),
                    })?;
                let uid = entry.uid.as_raw();
                if uid == 0 {
                    return Err(RunAsError::Root { what: "uid" });
                }
                (uid, Some(entry))
            }
        };
        let gid = match group_part {
            Some(group) => match numeric_id("gid", group) {
                Some(gid) => gid?,
                None => Group::from_name(group)
                    .map_err(lookup("group", group))?
                    .ok_or_else(|| RunAsError::UnknownGroup {
                        name: group.to_string(),
                    })?
                    .gid
                    .as_raw(),
            },
            None => entry
                .as_ref()
                .map(|e| e.gid.as_raw())
                .ok_or(RunAsError::NoGroup { uid })?,
        };
        if gid == 0 {
            return Err(RunAsError::Root { what: "gid" });
        }
        let group = Group::from_gid(Gid::from_raw(gid))
            .ok()
            .flatten()
            .map_or_else(|| gid.to_string(), |g| g.name);
        Ok(RunAs {
            uid,
            gid,
            user: entry
                .as_ref()
                .map_or_else(|| uid.to_string(), |e| e.name.clone()),
            group,
            home: entry.map(|e| e.dir),
        })
    }

    /// The start-up check: this worker can give its children this user and still end them at a
    /// timeout (it has `CAP_SETUID`, `CAP_SETGID` and `CAP_KILL`, as root has unless its
    /// capabilities were cut), and it is not the worker's own user.
    pub fn check_can_switch(&self) -> Result<(), RunAsError> {
        let uid = nix::unistd::geteuid().as_raw();
        if uid == self.uid {
            return Err(RunAsError::SameUser {
                user: self.user.clone(),
                uid,
            });
        }
        let status =
            std::fs::read_to_string("/proc/self/status").map_err(RunAsError::Capabilities)?;
        let caps = effective_capabilities(&status).ok_or_else(|| {
            RunAsError::Capabilities(std::io::Error::other("no readable CapEff line"))
        })?;
        let missing: Vec<&str> = [
            (CAP_SETUID, "CAP_SETUID"),
            (CAP_SETGID, "CAP_SETGID"),
            (CAP_KILL, "CAP_KILL"),
        ]
        .into_iter()
        .filter(|(bit, _)| caps & (1 << bit) == 0)
        .map(|(_, name)| name)
        .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(RunAsError::CannotSwitch {
                user: self.to_string(),
                uid,
                missing: missing.join(", "),
            })
        }
    }

    /// The start-up check of `--handlers DIR` under `--run-as`: every executable file directly
    /// inside it (links followed) can be executed by this user, and a script (`#!`) read too,
    /// judged by its mode bits (the worker opens the file itself, so the directory's own mode does
    /// not matter). Files nobody may execute are not handlers and are left alone.
    pub fn check_handlers(&self, dir: &Path) -> Result<(), RunAsError> {
        let unreadable = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RunAsError::Unreadable { path, source }
        };
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(unreadable(dir))?
            .map(|e| e.map(|e| e.path()).map_err(unreadable(dir)))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for path in entries {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let mode = meta.mode() & 0o7777;
            if !meta.is_file() || mode & 0o111 == 0 {
                continue;
            }
            // The permission class the kernel applies to this user: owner, else group, else other.
            let shift = if meta.uid() == self.uid {
                6
            } else if meta.gid() == self.gid {
                3
            } else {
                0
            };
            let bits = (mode >> shift) & 0o7;
            let script = is_script(&path);
            let need = if script { 0o5 } else { 0o1 };
            if bits & need != need {
                return Err(RunAsError::HandlerNotRunnable {
                    path,
                    mode,
                    owner: meta.uid(),
                    group: meta.gid(),
                    user: self.user.clone(),
                    need: if script {
                        "read and execute"
                    } else {
                        "execute"
                    },
                });
            }
        }
        Ok(())
    }

    /// Makes `cmd`'s child this user: std's spawn calls `setgroups([])`, `setgid` and `setuid`
    /// between fork and exec; `HOME` becomes the user's home (left out when it has none).
    pub(crate) fn apply(&self, cmd: &mut tokio::process::Command) {
        cmd.uid(self.uid).gid(self.gid);
        match &self.home {
            Some(home) => cmd.env("HOME", home),
            None => cmd.env_remove("HOME"),
        };
        refuse_leftover_privileges(cmd);
    }
}

/// Whether the file starts with `#!`: its interpreter reads it as the child's user.
fn is_script(path: &Path) -> bool {
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"#!")
}

/// The `CapEff` mask of a `/proc/<pid>/status` text.
fn effective_capabilities(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// In the child, after std switched its user: no exec with a supplementary group left (std
/// ignores a `setgroups` refused for want of `CAP_SETGID`, which [`RunAs::check_can_switch`] rules
/// out at start), and no ambient capability passed on (a worker given `CAP_SETUID` as an ambient
/// capability would otherwise hand it to every handler, which could then become any user).
#[allow(unsafe_code)]
fn refuse_leftover_privileges(cmd: &mut tokio::process::Command) {
    // SAFETY: the hook runs in the child between fork and exec; it calls only getgroups and prctl,
    // which are async-signal-safe, and allocates nothing (the errors are raw OS codes).
    unsafe {
        cmd.pre_exec(|| {
            if libc::getgroups(0, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::from_raw_os_error(libc::EPERM));
            }
            let cleared = libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            );
            // EINVAL: a kernel without ambient capabilities (before 4.3) has none to pass on.
            if cleared == -1 {
                let error = std::io::Error::last_os_error();
                if error.raw_os_error() != Some(libc::EINVAL) {
                    return Err(error);
                }
            }
            Ok(())
        });
    }
}

/// Marks this process non-dumpable: its `/proc/<pid>` files (`environ`, `mem`, `fd`, …) then
/// belong to root, a process of the same user cannot read them or attach a debugger, and it
/// leaves no core dump. Children are dumpable again after their exec.
pub fn set_non_dumpable() -> Result<(), RunAsError> {
    nix::sys::prctl::set_dumpable(false).map_err(RunAsError::NonDumpable)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `getent`'s answer, independent of the code under test: (uid, gid, home) of `user`.
    fn getent_passwd(user: &str) -> Option<(u32, u32, String)> {
        let out = std::process::Command::new("getent")
            .args(["passwd", user])
            .output()
            .ok()?;
        let line = String::from_utf8(out.stdout).ok()?;
        let fields: Vec<&str> = line.trim().split(':').collect();
        Some((
            fields.get(2)?.parse().ok()?,
            fields.get(3)?.parse().ok()?,
            fields.get(5)?.to_string(),
        ))
    }

    fn getent_group_id(group: &str) -> Option<u32> {
        let out = std::process::Command::new("getent")
            .args(["group", group])
            .output()
            .ok()?;
        String::from_utf8(out.stdout)
            .ok()?
            .trim()
            .split(':')
            .nth(2)?
            .parse()
            .ok()
    }

    #[test]
    fn a_user_name_resolves_to_its_ids_group_and_home() {
        let Some((uid, gid, home)) = getent_passwd("nobody") else {
            eprintln!("skipped: this system has no user nobody");
            return;
        };
        let run_as = RunAs::parse("nobody").unwrap();
        assert_eq!((run_as.uid, run_as.gid), (uid, gid));
        assert_eq!(run_as.user, "nobody");
        assert_eq!(run_as.home, Some(PathBuf::from(home)));
        // Numeric ids name the same user; a group given replaces the primary one.
        let numeric = RunAs::parse(&format!("{uid}")).unwrap();
        assert_eq!(
            (numeric.uid, numeric.gid, numeric.user.as_str()),
            (uid, gid, "nobody")
        );
        let with_group = RunAs::parse(&format!("nobody:{}", gid + 1)).unwrap();
        assert_eq!(with_group.gid, gid + 1);
        if let Some(daemon) = getent_group_id("daemon") {
            let named = RunAs::parse("nobody:daemon").unwrap();
            assert_eq!((named.gid, named.group.as_str()), (daemon, "daemon"));
        }
    }

    #[test]
    fn a_numeric_user_without_an_entry_needs_a_group() {
        // Ids near the top of the range are never allocated by Debian's adduser.
        let uid = 4_000_000_123u32;
        assert!(getent_passwd(&uid.to_string()).is_none());
        let err = RunAs::parse(&uid.to_string()).unwrap_err().to_string();
        assert_eq!(
            err,
            "uid 4000000123 has no entry in the user database, so its group is unknown: give it, as 4000000123:GROUP"
        );
        let run_as = RunAs::parse(&format!("{uid}:{uid}")).unwrap();
        assert_eq!((run_as.uid, run_as.gid), (uid, uid));
        assert_eq!(run_as.user, uid.to_string());
        assert_eq!(run_as.home, None);
    }

    #[test]
    fn unknown_names_root_and_bad_ids_are_refused_naming_what() {
        for (text, expected) in [
            (
                "no-such-user-x",
                r#"unknown user "no-such-user-x": the user database has no such user"#,
            ),
            (
                "nobody:no-such-group-x",
                r#"unknown group "no-such-group-x": the group database has no such group"#,
            ),
            (
                "root",
                "uid 0 is root's: handlers would keep root's rights; name an unprivileged user and group",
            ),
            (
                "0",
                "uid 0 is root's: handlers would keep root's rights; name an unprivileged user and group",
            ),
            (
                "nobody:0",
                "gid 0 is root's: handlers would keep root's rights; name an unprivileged user and group",
            ),
            ("4294967295", r#"uid "4294967295" is out of range 1-4294967294"#),
            ("99999999999", r#"uid "99999999999" is out of range 1-4294967294"#),
            ("nobody:4294967295", r#"gid "4294967295" is out of range 1-4294967294"#),
            ("", r#""" is not USER or USER:GROUP (no user before ':')"#),
            (":nogroup", r#"":nogroup" is not USER or USER:GROUP (no user before ':')"#),
            ("nobody:", r#""nobody:" is not USER or USER:GROUP (no group after ':')"#),
        ] {
            let err = RunAs::parse(text).map(|r| r.to_string());
            assert_eq!(
                err.as_ref().map_err(ToString::to_string),
                Err(expected.to_string()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_handler_the_run_as_user_cannot_execute_or_a_script_it_cannot_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &[u8], mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, body).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        // Owned by the test's user, never the run-as user below.
        let run_as = RunAs {
            uid: 4_000_000_123,
            gid: 4_000_000_123,
            user: "jobs".into(),
            group: "jobs".into(),
            home: None,
        };
        write("script", b"#!/bin/sh\nexit 0\n", 0o755);
        write("binary", b"\x7fELF", 0o711);
        write("notes", b"#!not a handler", 0o600);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        run_as.check_handlers(dir.path()).unwrap();

        let private = write("private", b"\x7fELF", 0o700);
        let err = run_as.check_handlers(dir.path()).unwrap_err().to_string();
        let me = nix::unistd::geteuid().as_raw();
        let group = nix::unistd::getegid().as_raw();
        assert_eq!(
            err,
            format!(
                "{p} (mode 0700, owner uid {me}, group gid {group}) cannot be run by jobs: it needs execute permission for that user (e.g. `chmod 0755 {p}`)",
                p = private.display()
            )
        );
        std::fs::remove_file(&private).unwrap();
        let unreadable = write("unreadable", b"#!/bin/sh\n", 0o711);
        let err = run_as.check_handlers(dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{} (mode 0711", unreadable.display()))
                && err.contains("needs read and execute permission"),
            "{err}"
        );
    }

    #[test]
    fn the_effective_capability_set_is_read_from_the_status_text() {
        let status = "Name:\tcronq\nCapInh:\t0000000000000000\nCapPrm:\t00000000000000c0\nCapEff:\t00000000000000c0\n";
        assert_eq!(effective_capabilities(status), Some(0xc0));
        assert_eq!(effective_capabilities("Name:\tcronq\n"), None);
    }

    #[test]
    fn switching_to_the_workers_own_user_or_without_the_capabilities_is_refused() {
        let me = nix::unistd::geteuid().as_raw();
        let own = RunAs {
            uid: me,
            gid: 1,
            user: "me".into(),
            group: "g".into(),
            home: None,
        };
        assert!(matches!(
            own.check_can_switch(),
            Err(RunAsError::SameUser { .. })
        ));
        // The decision follows the capability set, whoever runs the test.
        let other = RunAs {
            uid: if me == 4_000_000_123 {
                4_000_000_124
            } else {
                4_000_000_123
            },
            ..own
        };
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let caps = effective_capabilities(&status).unwrap();
        let can = [CAP_SETUID, CAP_SETGID, CAP_KILL]
            .iter()
            .all(|bit| caps & (1 << bit) != 0);
        match other.check_can_switch() {
            Ok(()) => assert!(can),
            Err(RunAsError::CannotSwitch { missing, .. }) => {
                assert!(!can);
                assert!(missing.contains("CAP_SET"), "{missing}");
            }
            Err(e) => panic!("{e}"),
        }
    }
}
