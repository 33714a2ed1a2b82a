//! The product is the static aarch64 binary, so this builds it the way
//! deploy/build-all does and runs it under qemu-aarch64-static against the
//! fake Bot API and a recording webhook receiver: event in, message out,
//! button press, response file, signed webhooks. The other tests run the
//! native debug build; this one catches what only the cross build can get
//! wrong: ring's C and assembly for ARM, the rust-lld link, musl's static
//! libc, inotify and sockets through the emulator.
//!
//! It needs the aarch64 musl target, clang and qemu-user-static, which
//! `tests/run` installs (through `.ci/setup`). When one is missing the test fails and says what to
//! install: it never skips. The first build takes about a minute on two
//! cores; later runs reuse `target/edge`.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/receivers.rs"]
mod receivers;
#[path = "support/telegram.rs"]
mod telegram;
#[path = "support/tools.rs"]
mod tools;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon::{Daemon, Setup};
use receivers::{verify_cctelegram, verify_standard, Recorder};
use serde_json::{json, Value};
use telegram::FakeTelegram;

const TARGET: &str = "aarch64-unknown-linux-musl";
/// The environment variable cc-rs reads for ring's C compiler.
const CC_VAR: &str = "CC_aarch64_unknown_linux_musl";
const QEMU: &str = "qemu-aarch64-static";
/// Everything is slower under the emulator.
const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "edge-s3cr3t";
const ME: i64 = 111;

/// Panics with one message naming everything that is missing and the
/// command that installs each.
fn check_prerequisites(cc: &str) {
    let why = format!("the edge smoke test builds for {TARGET} and runs it under {QEMU}");
    tools::require_rust_target(TARGET, &why);
    // .cargo/config.toml links the target with rust-lld; rustup ships it
    // in lib/rustlib/<host>/bin of every toolchain.
    let rustlib = tools::rustc_sysroot()
        .unwrap_or_default()
        .join("lib/rustlib");
    let has_lld = fs::read_dir(&rustlib).is_ok_and(|d| {
        d.filter_map(Result::ok)
            .any(|e| e.path().join("bin/rust-lld").is_file())
    });
    assert!(
        has_lld,
        "rust-lld, the linker .cargo/config.toml names, is missing: it comes with a rustup \
         toolchain (none under {}); reinstall the toolchain with rustup",
        rustlib.display()
    );
    let mut missing = Vec::new();
    if tools::which(cc).is_none() {
        let install = match cc {
            "clang" => tools::install_command("clang"),
            _ => format!("apt-get install clang, or set {CC_VAR} to a C compiler for {TARGET}"),
        };
        missing.push(tools::missing(cc, &install));
    }
    if tools::which(QEMU).is_none() {
        missing.push(tools::missing(QEMU, &tools::install_command(QEMU)));
    }
    assert!(
        missing.is_empty(),
        "the edge smoke test cannot run ({why}):\n  - {}",
        missing.join("\n  - ")
    );
}

/// Builds the release binary for aarch64 in its own target directory, so
/// the cargo running this test holds no lock it needs. Returns its path.
fn build() -> PathBuf {
    let cc = std::env::var(CC_VAR).unwrap_or_else(|_| "clang".to_string());
    check_prerequisites(&cc);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = root.join("target/edge");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let started = Instant::now();
    let out = Command::new(&cargo)
        .current_dir(root)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir)
        .env(CC_VAR, &cc)
        // Flags meant for the host (coverage, target-cpu=native) break a
        // cross build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?}: {e}"));
    assert!(
        out.status.success(),
        "cargo build --release --target {TARGET} ({CC_VAR}={cc}) failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "edge_smoke: release build for {TARGET} took {:.1?}",
        started.elapsed()
    );
    target_dir.join(TARGET).join("release/cctelegram")
}

/// Asserts that `bin` is an aarch64 ELF executable without an interpreter,
/// i.e. static: qemu would otherwise look for a musl loader that is not here.
fn assert_static_aarch64(bin: &Path) {
    let b = fs::read(bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(
        b.len() > 64 && b.starts_with(b"\x7fELF") && b[4] == 2 && b[5] == 1,
        "{} is no little-endian ELF64 file",
        bin.display()
    );
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([b[o], b[o + 1]]));
    assert_eq!(u16_at(18), 183, "e_machine is not EM_AARCH64");
    let phoff = usize::try_from(u64::from_le_bytes(b[32..40].try_into().unwrap())).unwrap();
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    let interp = (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) == 3 // PT_INTERP
    });
    assert!(!interp, "{} is dynamically linked", bin.display());
}

#[test]
fn the_aarch64_binary_under_qemu_sends_records_the_answer_and_signs_webhooks() {
    let bin = build();
    assert_static_aarch64(&bin);

    let rec = Recorder::start();
    let tg = FakeTelegram::start();
    let webhook = format!(
        "[webhook]\nenabled = true\nsecret = \"{SECRET}\"\nendpoints = [{:?}, {:?}]\ntimeout_seconds = 10\n",
        rec.url("/webhook/events"),
        rec.url("/webhook/responses"),
    );
    let setup = Setup::new("edge", &tg.url(), &[ME], &webhook);
    let d = Daemon::spawn_with(
        QEMU,
        &[bin.as_os_str()],
        &["run", "--config", setup.config.to_str().unwrap()],
    );
    tg.wait_until(WAIT, "a getUpdates long poll", |s| {
        s.in_flight("getUpdates") > 0
    });

    // Event in, message out.
    let event = json!({"type": "approval_request", "title": "Deploy?", "task_id": "edge_1",
                       "description": "Deploy v1.2.3 to the edge?",
                       "data": {"options": ["Approve", "Deny"], "requires_response": true}});
    setup.drop_event("edge.json", &event.to_string());
    let msg = tg.wait_messages(1, WAIT).remove(0);
    assert!(
        msg.text.contains("Deploy v1.2.3 to the edge?"),
        "{}",
        msg.text
    );
    let markup = msg.reply_markup.as_ref().expect("buttons");
    assert_eq!(
        markup["inline_keyboard"][0][0]["callback_data"],
        json!("approve_edge_1"),
        "{markup}"
    );

    // Button press, response file.
    tg.press(ME, "john_doe", msg.message_id, ME, "approve_edge_1");
    d.out.wait_for("chose \"Approve\"", WAIT);
    let files = Setup::files(&setup.responses);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].starts_with(&format!("telegram_callback_{ME}_")),
        "{files:?}"
    );
    let r: Value =
        serde_json::from_str(&fs::read_to_string(setup.responses.join(&files[0])).unwrap())
            .unwrap();
    assert_eq!(r["option"], json!("Approve"), "{r}");
    assert_eq!(r["event_id"], json!("edge_1"), "{r}");
    assert_eq!(r["callback_data"], json!("approve_edge_1"), "{r}");
    assert_eq!(r["original_message_id"], json!(msg.message_id), "{r}");

    // Signed webhooks: ring's HMAC, computed on (emulated) ARM.
    let got = rec.wait_until(WAIT, "event_processed and user_response", |got| {
        ["/webhook/events", "/webhook/responses"]
            .iter()
            .all(|p| got.iter().any(|q| q.path == *p))
    });
    for q in &got {
        assert!(
            verify_cctelegram(SECRET, &q.headers, &q.body),
            "X-CCTelegram-Signature does not verify: {}",
            q.text()
        );
        assert!(
            verify_standard(SECRET, &q.headers, &q.body),
            "webhook-signature does not verify: {}",
            q.text()
        );
    }
    let body = |path: &str| got.iter().find(|q| q.path == path).unwrap().json();
    let processed = body("/webhook/events");
    assert_eq!(processed["webhook_type"], json!("event_processed"));
    assert_eq!(processed["event"]["status"], json!("delivered"));
    assert_eq!(
        processed["event"]["telegram_message_id"],
        json!(msg.message_id)
    );
    let response = body("/webhook/responses");
    assert_eq!(response["webhook_type"], json!("user_response"));
    assert_eq!(response["response"]["event_id"], json!("edge_1"));
    assert_eq!(
        response["response"]["callback_data"],
        json!("approve_edge_1")
    );
}
