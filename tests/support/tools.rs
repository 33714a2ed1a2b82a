//! The programs and packages some tests run besides the binary (shellcheck,
//! node with express, python3 with flask, qemu, clang, the aarch64 target...)
//! and the one way a test asks for them.
//!
//! A test that lacks one fails, never skips, and says how to get it: the
//! README's test command `tests/run` installs everything as root (it calls
//! `.ci/setup`), or the single command for that tool. So `cargo test` works
//! wherever the tools are present, and a fresh machine gets a message a
//! person can act on instead of "No such file or directory".
//!
//! Include it with `#[path = "support/tools.rs"] mod tools;`.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What installs each tool on Debian; `tests/run` (as root) installs them all.
const INSTALL: &[(&str, &str)] = &[
    ("shellcheck", "apt-get install shellcheck"),
    ("busybox", "apt-get install busybox"),
    ("systemd-analyze", "apt-get install systemd"),
    ("qemu-aarch64-static", "apt-get install qemu-user-static"),
    ("clang", "apt-get install clang"),
    ("node", "apt-get install nodejs npm"),
    ("npm", "apt-get install npm"),
    ("python3", "apt-get install python3 python3-pip"),
    ("chromium", "apt-get install chromium"),
    ("ip", "apt-get install iproute2"),
    ("unshare", "apt-get install util-linux"),
];

/// The message for a missing `what`, installed by `install`.
pub fn missing(what: &str, install: &str) -> String {
    format!("{what} is not installed: run `tests/run` as root, or `{install}`")
}

/// Where `program` is: a path as given, or the first match on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The command that installs `program`.
pub fn install_command(program: &str) -> String {
    INSTALL.iter().find(|(p, _)| *p == program).map_or_else(
        || format!("apt-get install {program}"),
        |(_, c)| c.to_string(),
    )
}

/// The path of `program`; panics naming the command that installs it.
/// `why` says what the test needs it for.
pub fn require(program: &str, why: &str) -> PathBuf {
    which(program)
        .unwrap_or_else(|| panic!("{} ({why})", missing(program, &install_command(program))))
}

/// The Python modules the receivers and tools import, by the pip package
/// that provides each.
const PYTHON_PACKAGES: &[(&str, &str)] = &[
    ("flask", "flask"),
    ("standardwebhooks", "standardwebhooks"),
    ("prometheus_client", "prometheus-client"),
    ("jsonschema", "jsonschema"),
];

/// Panics unless `python3` can import `module`, naming the install command.
pub fn require_python_module(module: &str, why: &str) {
    let python = require("python3", why);
    let ok = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let package = PYTHON_PACKAGES
            .iter()
            .find(|(m, _)| *m == module)
            .map_or(module, |(_, p)| p);
        panic!(
            "{} ({why})",
            missing(
                &format!("the Python package {package}"),
                "pip install -r tests/receivers/requirements.txt"
            )
        );
    }
}

/// Panics unless `tests/receivers/node_modules` holds `package` (and node exists).
pub fn require_node_package(package: &str, why: &str) {
    require_node_package_in("tests/receivers", package, why)
}

/// Panics unless `<prefix>/node_modules` (a path from the crate root)
/// holds `package`, and node exists.
pub fn require_node_package_in(prefix: &str, package: &str, why: &str) {
    require("node", why);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(prefix)
        .join("node_modules");
    if !dir.join(package).join("package.json").is_file() {
        panic!(
            "{} ({why})",
            missing(
                &format!("the npm package {package}"),
                &format!("npm ci --prefix {prefix}")
            )
        );
    }
}

/// The active toolchain's sysroot, from `rustc --print sysroot`.
pub fn rustc_sysroot() -> Option<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Panics unless the Rust standard library for `target` is installed.
pub fn require_rust_target(target: &str, why: &str) {
    let present =
        rustc_sysroot().is_some_and(|s| s.join("lib/rustlib").join(target).join("lib").is_dir());
    if !present {
        panic!(
            "{} ({why})",
            missing(
                &format!("the Rust standard library for {target}"),
                &format!("rustup target add {target}")
            )
        );
    }
}
