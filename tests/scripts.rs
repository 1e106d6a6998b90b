//! `scripts/deps.sh`, the apt step of the README's two commands, run against shims of `dpkg`,
//! `apt-get`, `id` and `sudo` on the PATH: as root and as a user with sudo, it installs exactly the
//! missing packages, non-interactively, and nothing when nothing is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Writes an executable shell script.
fn shim(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write shim");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod shim");
}

struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    /// A PATH where `dpkg -s P` fails for the packages in `missing`, `id -u` prints `uid`, `sudo`
    /// marks what it runs, and `apt-get` writes each call (with its DEBIAN_FRONTEND and whether it
    /// came through sudo) to a log instead of installing.
    fn new(uid: u32, missing: &[&str]) -> Machine {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        let log = dir.path().join("apt.log");
        shim(
            &bin,
            "dpkg",
            &format!(
                "[ \"$1\" = -s ] || exit 64\nfor m in {}; do [ \"$2\" = \"$m\" ] && exit 1; done\nexit 0",
                missing.join(" ")
            ),
        );
        shim(
            &bin,
            "id",
            &format!("[ \"$1\" = -u ] && echo {uid} && exit 0\nexit 64"),
        );
        shim(&bin, "sudo", "CRONQ_VIA_SUDO=1 exec \"$@\"");
        shim(
            &bin,
            "apt-get",
            &format!(
                "echo \"sudo=${{CRONQ_VIA_SUDO:-0}} frontend=${{DEBIAN_FRONTEND:-}} $*\" >> {}",
                log.display()
            ),
        );
        Machine { dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/deps.sh");
        let path = format!("{}:/usr/bin:/bin", self.dir.path().join("bin").display());
        Command::new("bash")
            .arg(script)
            .args(args)
            .env("PATH", path)
            .env_remove("DEBIAN_FRONTEND")
            .env_remove("CRONQ_VIA_SUDO")
            .output()
            .expect("run scripts/deps.sh")
    }

    /// The apt-get calls, one per line; empty when apt-get never ran.
    fn apt_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("apt.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "scripts/deps.sh failed with {}: stdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn as_root_installs_the_missing_packages_without_sudo() {
    let machine = Machine::new(0, &["libssl-dev", "chromium", "faketime"]);
    let out = machine.run(&["test"]);
    assert_ok(&out);
    assert_eq!(
        machine.apt_calls(),
        [
            "sudo=0 frontend=noninteractive update -qq",
            "sudo=0 frontend=noninteractive install -y -qq --no-install-recommends libssl-dev chromium faketime",
        ]
    );
}

#[test]
fn as_a_user_installs_the_missing_packages_through_sudo() {
    let machine = Machine::new(1000, &["pkg-config"]);
    let out = machine.run(&["test"]);
    assert_ok(&out);
    assert_eq!(
        machine.apt_calls(),
        [
            "sudo=1 frontend=noninteractive update -qq",
            "sudo=1 frontend=noninteractive install -y -qq --no-install-recommends pkg-config",
        ]
    );
}

#[test]
fn the_build_alone_does_not_ask_for_chromium() {
    let machine = Machine::new(0, &["chromium", "libssl-dev"]);
    assert_ok(&machine.run(&[]));
    assert_eq!(
        machine.apt_calls().last().map(String::as_str),
        Some("sudo=0 frontend=noninteractive install -y -qq --no-install-recommends libssl-dev")
    );
}

#[test]
fn named_packages_only() {
    let machine = Machine::new(1000, &["systemd", "libssl-dev"]);
    assert_ok(&machine.run(&["only", "systemd"]));
    assert_eq!(
        machine.apt_calls().last().map(String::as_str),
        Some("sudo=1 frontend=noninteractive install -y -qq --no-install-recommends systemd")
    );
}

#[test]
fn nothing_missing_runs_no_apt() {
    let machine = Machine::new(1000, &[]);
    assert_ok(&machine.run(&["test"]));
    assert!(machine.apt_calls().is_empty(), "{:?}", machine.apt_calls());
}

#[test]
fn an_unknown_argument_is_a_usage_error() {
    let machine = Machine::new(0, &["chromium"]);
    let out = machine.run(&["tests"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
    assert!(machine.apt_calls().is_empty());
}
