//! What a new user runs first (issue 11): `cargo run --example demo` shows
//! the whole round trip without a token, and the README's test command is
//! the one CI runs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The demo must finish within this once built (the "under a minute").
const DEMO_DEADLINE: Duration = Duration::from_secs(60);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `bin` is newer than every source its dep-info file (`bin.d`,
/// which cargo writes beside it) lists: then it is what cargo would build.
fn up_to_date(bin: &Path) -> bool {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
    let (Ok(built), Ok(deps)) = (mtime(bin), std::fs::read_to_string(bin.with_extension("d")))
    else {
        return false;
    };
    let Some((_, sources)) = deps.split_once(": ") else {
        return false;
    };
    sources
        .split_whitespace()
        .all(|src| mtime(Path::new(src)).is_ok_and(|t| t <= built))
}

/// The demo binary: the one `cargo test` built next to this test (it builds
/// the examples), or, when that is missing or older than its sources (as
/// after `cargo test --test demo`), a build in its own target directory:
/// the cargo running this test holds the lock on the usual one.
fn demo_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let built = profile_dir.join("examples/demo");
    if up_to_date(&built) {
        return built;
    }
    let target_dir = root().join("target/demo");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args(["build", "--example", "demo", "--target-dir"])
        .arg(&target_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run cargo build --example demo");
    assert!(
        out.status.success(),
        "cargo build --example demo failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join("debug/examples/demo")
}

/// Runs the demo with stdout and stderr on pipes; exit code, stdout, stderr.
fn run_demo() -> (i32, String, String, Duration) {
    let bin = demo_binary();
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .env_remove("NO_COLOR")
        // A terminal type that has colours: none may appear all the same,
        // because stdout is a pipe.
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEMO_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the demo ran longer than {DEMO_DEADLINE:?}:\n{}",
                out.join().unwrap_or_default()
            );
        }
        // std has no wait with a timeout; the exit is looked for every 20 ms.
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    (status.code().unwrap_or(-1), out, err, elapsed)
}

#[test]
fn the_demo_shows_the_round_trip_and_webhooks_that_verified() {
    let (code, out, err, elapsed) = run_demo();
    assert_eq!(code, 0, "the demo failed:\n{out}\n--- stderr\n{err}");
    assert!(elapsed < DEMO_DEADLINE, "{elapsed:?}");
    let all = format!("{out}{err}");
    assert!(
        !all.contains('\x1b'),
        "escape codes with stdout on a pipe:\n{all}"
    );

    // The press and the reply, labelled as simulated, and their files.
    assert!(
        out.contains("Simulated: user 111 taps [ Approve ]"),
        "{out}"
    );
    assert!(
        out.contains("Simulated: user 111 replies to message"),
        "{out}"
    );
    assert!(
        out.contains("response file: telegram_callback_111_"),
        "{out}"
    );
    assert!(
        out.contains("response file: telegram_response_111_"),
        "{out}"
    );
    assert!(out.contains("\"Approve\""), "the file's option: {out}");
    assert!(out.contains("buttons gone and the decision added"), "{out}");

    // Every webhook type arrived and verified under both schemes.
    let verified = |kind: &str| {
        out.lines()
            .filter(|l| l.contains("⇢ POST") && l.contains(kind) && l.ends_with("✓ verified"))
            .count()
    };
    assert!(verified("event_processed") >= 5, "{out}");
    assert_eq!(verified("user_response"), 2, "{out}");
    assert_eq!(verified("health_update"), 2, "{out}");
    assert!(out.contains("health_unhealthy, now unhealthy"), "{out}");
    assert!(out.contains("health_recovered, now healthy"), "{out}");
    assert!(
        out.contains("webhooks verified under both signature schemes"),
        "{out}"
    );

    // The forgery was refused, by signature.
    assert!(out.contains("✗ refused with 401"), "{out}");
    assert!(
        out.contains("the forged delivery was refused with 401"),
        "{out}"
    );
    assert!(
        out.contains("X-CCTelegram-Signature: the signature does not match"),
        "{out}"
    );

    // It reads well in a 100-column terminal.
    let wide: Vec<&str> = out.lines().filter(|l| l.chars().count() > 100).collect();
    assert!(wide.is_empty(), "lines wider than 100 columns: {wide:#?}");
}

#[test]
fn ci_runs_the_readme_test_command() {
    let read = |p: &str| std::fs::read_to_string(root().join(p)).unwrap();
    let readme = read("README.md");
    // The README's first screen names the demo and the test command.
    let first_screen: String = readme.lines().take(45).collect::<Vec<_>>().join("\n");
    assert!(
        first_screen.contains("cargo run --example demo"),
        "{first_screen}"
    );
    assert!(first_screen.contains("\ntests/run\n"), "{first_screen}");
    for step in ["cctelegram init", "cctelegram run", "cctelegram send"] {
        assert!(
            first_screen.contains(step),
            "{step} missing:\n{first_screen}"
        );
    }
    // CI runs exactly that command, as a line of its own...
    let ci = read(".ci/run");
    assert!(ci.lines().any(|l| l.trim() == "tests/run"), "{ci}");
    // ...which installs what .ci/setup installs, then runs the suite.
    let run = read("tests/run");
    let commands: Vec<&str> = run
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(commands.contains(&".ci/setup"), "{run}");
    assert!(commands.contains(&"exec cargo test \"$@\""), "{run}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(root().join("tests/run"))
            .unwrap()
            .permissions(),
    );
    assert!(mode & 0o111 != 0, "tests/run is not executable");
}
