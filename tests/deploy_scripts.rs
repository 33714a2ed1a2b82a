//! The files in `deploy/` (issue "Ship to the edge"): every shell script
//! parses and passes shellcheck, the systemd unit carries its hardening and
//! passes `systemd-analyze verify`, the example config loads, the OpenRC and
//! procd scripts refuse a bad config before their supervisor can respawn it,
//! and `deploy/install.sh` installs, reinstalls and uninstalls on a fake
//! device for each init system.
//!
//! The fake device is a directory: fake `ssh` and `scp` (written here) run
//! the remote side on this machine with `CCTELEGRAM_ROOT` pointing into a
//! temp dir, and a PATH that holds only fakes (`uname`, `id`, `chown`,
//! `systemctl`, `useradd`, ...; each logs its arguments) and a short list of
//! ordinary tools. Nothing is sent anywhere: the host is `device.invalid`,
//! and no real user, group or service of this machine can be touched.

use std::collections::BTreeMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "support/tools.rs"]
mod tools;

use tools::which;

const BIN: &str = env!("CARGO_BIN_EXE_cctelegram");
const HOST: &str = "root@device.invalid";

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn mode(path: impl AsRef<Path>) -> u32 {
    let path = path.as_ref();
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn write_exec(path: &Path, body: &str) {
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

struct Temp(PathBuf);

impl Temp {
    fn new(tag: &str) -> Temp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        // Under target/, not /tmp: the fake device's scripts must be
        // executable, and /tmp may be mounted noexec.
        let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "cctelegram-deploy-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Temp(p)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Which shell a deploy file is written for, from its first line.
fn shell_of(path: &Path) -> Option<&'static str> {
    let first = fs::read_to_string(path).ok()?.lines().next()?.to_string();
    if !first.starts_with("#!") {
        return None;
    }
    if first.contains("bash") {
        Some("bash")
    } else if first.starts_with("#!/bin/sh") || first.starts_with("#!/sbin/openrc-run") {
        Some("sh")
    } else {
        None
    }
}

#[test]
fn every_deploy_script_parses_and_passes_shellcheck() {
    let shellcheck = tools::require("shellcheck", "the deploy scripts are linted with it");
    let mut checked = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(deploy())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for path in entries {
        let Some(shell) = shell_of(&path) else {
            continue;
        };
        // dash on Debian: stricter than bash about POSIX syntax.
        let out = Command::new(shell).arg("-n").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{shell} -n {}\n{}",
            path.display(),
            show(&out)
        );
        let out = Command::new(&shellcheck)
            .args(["-s", shell])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "shellcheck {}\n{}",
            path.display(),
            show(&out)
        );
        checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    for mine in ["cctelegram.openrc", "cctelegram.procd", "install.sh"] {
        assert!(
            checked.iter().any(|c| c == mine),
            "{mine} not checked: {checked:?}"
        );
    }
    eprintln!("sh -n / bash -n and shellcheck passed: {checked:?}");
}

/// `[Section]` -> (key, value) in file order; repeated keys stay repeated.
fn parse_unit(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a key=value line: {line}"));
        out.entry(section.clone())
            .or_default()
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    out
}

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let unit = read(deploy().join("cctelegram.service"));
    let parsed = parse_unit(&unit);
    let service = &parsed["Service"];
    let values = |key: &str| -> Vec<&str> {
        service
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let one = |key: &str| -> &str {
        let v = values(key);
        assert_eq!(v.len(), 1, "{key} should be set once in [Service]: {v:?}");
        v[0]
    };
    assert_eq!(
        one("ExecStart"),
        "/usr/local/bin/cctelegram run --config /etc/cctelegram/config.toml"
    );
    assert!(
        one("RestartPreventExitStatus")
            .split_whitespace()
            .any(|s| s == "78"),
        "exit 78 (bad config) must not be restarted"
    );
    for (key, want) in [
        ("Type", "simple"),
        ("Restart", "on-failure"),
        ("User", "cctelegram"),
        ("Group", "cctelegram"),
        ("StateDirectory", "cctelegram"),
        ("UMask", "0027"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("MemoryMax", "32M"),
        ("LockPersonality", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("RestrictNamespaces", "yes"),
    ] {
        assert_eq!(one(key), want, "[Service] {key}");
    }
    let mut families: Vec<&str> = one("RestrictAddressFamilies").split_whitespace().collect();
    families.sort_unstable();
    assert_eq!(families, ["AF_INET", "AF_INET6", "AF_UNIX"]);
    assert!(
        values("SystemCallFilter").contains(&"@system-service"),
        "SystemCallFilter=@system-service"
    );
    // Writers need a stable group to join: no DynamicUser.
    assert!(values("DynamicUser").iter().all(|v| *v == "no"));
    assert!(parsed["Install"]
        .iter()
        .any(|(k, v)| k == "WantedBy" && v == "multi-user.target"));

    let analyze = tools::require("systemd-analyze", "it verifies the unit");
    // verify wants ExecStart to exist; the copy points at the test binary.
    let tmp = Temp::new("unit");
    let copy = tmp.0.join("cctelegram.service");
    fs::write(&copy, unit.replace("/usr/local/bin/cctelegram", BIN)).unwrap();
    let out = Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    // verify exits 0 on an unknown key and only says so: any output fails.
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify\n{}",
        show(&out)
    );
    // Exposure 0..10 (lower is safer); --threshold takes tenths. Older
    // systemd (before 250) has no --offline: then this part is skipped.
    let out = Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&copy)
        .output()
        .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    if all.contains("Overall exposure level") {
        assert!(out.status.success(), "exposure above 2.0\n{}", show(&out));
        let level = all
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or("");
        eprintln!("systemd-analyze verify passed; {}", level.trim());
    } else {
        eprintln!("systemd-analyze verify passed; this systemd has no offline security check");
    }
}

fn check_config(config: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(config)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn example_config_loads_and_a_missing_token_is_noted() {
    let config = deploy().join("config.example.toml");
    let out = check_config(&config, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    for line in [
        "events_dir = \"/var/lib/cctelegram/events\"",
        "responses_dir = \"/var/lib/cctelegram/responses\"",
        "state_dir = \"/var/lib/cctelegram/state\"",
        "listen = \"127.0.0.1:8080\"",
    ] {
        assert!(stdout.contains(line), "{line}\n{}", show(&out));
    }
    assert!(!stderr.contains("unknown config key"), "{}", show(&out));
    // The OpenRC and procd scripts and install.sh read this note to refuse
    // starting a daemon that would exit 78; it must be there without a
    // token and gone with one.
    assert!(stderr.contains("no bot token"), "{}", show(&out));
    let out = check_config(
        &config,
        &[
            ("TELEGRAM_BOT_TOKEN", "123:abc"),
            ("TELEGRAM_ALLOWED_USERS", "42"),
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        !text(&out.stderr).contains("no bot token"),
        "{}",
        show(&out)
    );
}

/// Configs for the init scripts' checks, in `dir`.
fn sample_configs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let example = read(deploy().join("config.example.toml"));
    let good = dir.join("good.toml");
    fs::write(&good, with_token(&example)).unwrap();
    let tokenless = dir.join("tokenless.toml");
    fs::write(&tokenless, &example).unwrap();
    let bad = dir.join("bad.toml");
    fs::write(&bad, "[limits]\nglobal_per_second = \"fast\"\n").unwrap();
    (good, tokenless, bad)
}

fn with_token(config: &str) -> String {
    let out = config
        .replace("bot_token = \"\"", "bot_token = \"123:abc\"")
        .replace("allowed_users = []", "allowed_users = [42]");
    assert_ne!(out, config, "the example config changed shape");
    out
}

/// Sources `script` in sh after `stubs`, then runs `body`.
fn source(script: &str, stubs: &str, body: &str) -> Output {
    let program = format!("{stubs}\n. '{}'\n{body}", deploy().join(script).display());
    Command::new("sh")
        .args(["-c", &program])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap()
}

#[test]
fn openrc_script_refuses_a_bad_config_before_supervise_daemon_respawns_it() {
    let tmp = Temp::new("openrc");
    let (good, tokenless, bad) = sample_configs(&tmp.0);
    let stubs = "eerror() { echo \"eerror: $*\"; }\n\
                 ewarn() { echo \"ewarn: $*\"; }\n\
                 checkpath() { echo \"checkpath $*\"; }\n\
                 need() { echo \"need $*\"; }\n\
                 use() { echo \"use $*\"; }\n\
                 after() { echo \"after $*\"; }";
    let start = |config: &Path| {
        let body = format!(
            "command='{BIN}'\nstart_pre\necho \"start_pre=$?\"\n\
             echo \"supervisor=$supervisor command_user=$command_user\"\n\
             echo \"command_args=$command_args\"\n\
             echo \"respawn=$respawn_delay/$respawn_max/$respawn_period umask=$umask\"\n\
             depend"
        );
        // conf.d sets this before the script is read, as openrc-run does.
        let stubs = format!("{stubs}\ncctelegram_config='{}'", config.display());
        source("cctelegram.openrc", &stubs, &body)
    };

    let out = start(&good);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("start_pre=0"), "{}", show(&out));
    for line in [
        "checkpath -d -m 0750 -o cctelegram:cctelegram /var/lib/cctelegram\n",
        "checkpath -d -m 2770 -o cctelegram:cctelegram /var/lib/cctelegram/events\n",
        "checkpath -d -m 2750 -o cctelegram:cctelegram /var/lib/cctelegram/responses\n",
        "checkpath -d -m 0700 -o cctelegram:cctelegram /var/lib/cctelegram/state\n",
        "supervisor=supervise-daemon command_user=cctelegram:cctelegram\n",
        "respawn=5/5/300 umask=027\n",
        "need net\n",
    ] {
        assert!(stdout.contains(line), "{line}{}", show(&out));
    }
    assert!(
        stdout.contains(&format!("command_args=run --config {}\n", good.display())),
        "{}",
        show(&out)
    );
    assert!(!stdout.contains("eerror"), "{}", show(&out));

    let out = start(&tokenless);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("start_pre=1"), "{}", show(&out));
    assert!(stdout.contains("eerror: no bot token"), "{}", show(&out));

    let out = start(&bad);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("start_pre=1"), "{}", show(&out));
    assert!(
        stdout.contains("limits.global_per_second"),
        "{}",
        show(&out)
    );

    let out = start(&tmp.0.join("missing.toml"));
    assert!(text(&out.stdout).contains("start_pre=1"), "{}", show(&out));
    assert!(text(&out.stdout).contains("is missing"), "{}", show(&out));
}

#[test]
fn procd_script_prepares_dirs_and_refuses_a_bad_config() {
    let tmp = Temp::new("procd");
    let (good, tokenless, bad) = sample_configs(&tmp.0);
    let stubs = "procd_open_instance() { echo open; }\n\
                 procd_set_param() { echo \"param $*\"; }\n\
                 procd_close_instance() { echo close; }\n\
                 logger() { :; }\n\
                 chown() { echo \"chown $*\"; }";
    let start = |config: &Path, dir: &Path| {
        let body = format!(
            "PROG='{BIN}'\nCONF='{}'\nDIR='{}'\n\
             echo \"USE_PROCD=$USE_PROCD START=$START\"\n\
             start_service\necho \"start_service=$?\"",
            config.display(),
            dir.display()
        );
        source("cctelegram.procd", stubs, &body)
    };

    let data = tmp.0.join("var-lib-cctelegram");
    let out = start(&good, &data);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("start_service=0"), "{}", show(&out));
    assert!(stdout.contains("USE_PROCD=1 START=95"), "{}", show(&out));
    for line in [
        format!("param command {BIN} run --config {}\n", good.display()),
        "param user cctelegram\n".into(),
        "param respawn 3600 5 5\n".into(),
        "param stderr 1\n".into(),
        format!("param file {}\n", good.display()),
        "close\n".into(),
    ] {
        assert!(stdout.contains(&line), "{line}{}", show(&out));
    }
    // /var is in RAM on OpenWrt: start recreates the shared directories.
    assert_eq!(mode(&data), 0o750);
    assert_eq!(mode(data.join("events")), 0o2770);
    assert_eq!(mode(data.join("responses")), 0o2750);
    assert_eq!(mode(data.join("state")), 0o700);
    assert!(stdout.contains(&format!(
        "chown cctelegram:cctelegram {d} {d}/events",
        d = data.display()
    )));

    for (config, why) in [
        (&tokenless, "no bot token"),
        (&bad, "limits.global_per_second"),
    ] {
        let out = start(config, &data);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(all.contains("start_service=1"), "{}", show(&out));
        assert!(all.contains(why), "{why}\n{}", show(&out));
        assert!(
            !all.contains("open\n"),
            "no instance for a bad config\n{}",
            show(&out)
        );
    }
}

// ---------------------------------------------------------------------------
// install.sh against a fake device.

#[derive(Clone, Copy, PartialEq)]
enum Init {
    Systemd,
    OpenRc,
    Procd,
    Unknown,
}

/// The only host tools the device side may use, besides the fakes: what
/// BusyBox offers on a router too.
const HOST_TOOLS: &[&str] = &[
    "sh", "cat", "cp", "mv", "rm", "mkdir", "chmod", "ln", "grep", "cut", "cmp", "mktemp",
    "dirname",
];

struct Device {
    tmp: Temp,
    root: PathBuf,
    log: PathBuf,
    dist: PathBuf,
}

impl Device {
    fn new(init: Init, arch: &str, uid: u32) -> Device {
        Device::with_tools(init, arch, uid, None)
    }

    /// `busybox`: every tool of the device side is this one BusyBox (its
    /// ash included), as on OpenWrt; otherwise this machine's tools.
    fn with_tools(init: Init, arch: &str, uid: u32, busybox: Option<&Path>) -> Device {
        let tmp = Temp::new("device");
        let root = tmp.0.join("root");
        let log = tmp.0.join("log");
        let dist = tmp.0.join("dist");
        let fakebin = tmp.0.join("fakebin");
        let hostbin = tmp.0.join("hostbin");
        for d in [&root, &dist, &fakebin, &hostbin] {
            fs::create_dir_all(d).unwrap();
        }
        for d in ["etc", "tmp", "root", "sbin", "usr/sbin"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(&log, "").unwrap();
        // uid 200 and gid 201 are taken, so OpenWrt's fallback must pick 202.
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/ash\nnetwork:x:200:101:network:/var:/bin/false\n",
        )
        .unwrap();
        fs::write(
            root.join("etc/group"),
            "root:x:0:\nnetwork:x:101:\nlogd:x:201:\n",
        )
        .unwrap();

        for tool in HOST_TOOLS {
            let real = match busybox {
                Some(b) => b.to_path_buf(),
                None => which(tool).unwrap_or_else(|| panic!("{tool} not found on PATH")),
            };
            symlink(real, hostbin.join(tool)).unwrap();
        }
        let r = root.display().to_string();
        let l = log.display().to_string();
        let logger = |name: &str, extra: &str| {
            write_exec(
                &fakebin.join(name),
                &format!("#!/bin/sh\necho \"{name} $*\" >>'{l}'\n{extra}"),
            );
        };
        write_exec(
            &fakebin.join("uname"),
            &format!("#!/bin/sh\n[ \"$1\" = -m ] && echo '{arch}' || echo Linux\n"),
        );
        write_exec(
            &fakebin.join("id"),
            &format!(
                "#!/bin/sh\n\
                 if [ \"$1\" = -u ] && [ -z \"${{2:-}}\" ]; then echo {uid}; exit 0; fi\n\
                 name=${{2:-$1}}\n\
                 line=$(grep \"^$name:\" '{r}/etc/passwd') || {{ echo \"id: $name: no such user\" >&2; exit 1; }}\n\
                 echo \"$line\" | cut -d: -f3\n"
            ),
        );
        // chown to a user this machine does not have: log it, change nothing.
        logger("chown", "");
        // sudo -n CMD...: run CMD (we are root already).
        logger("sudo", "[ \"$1\" = -n ] && shift\nexec \"$@\"\n");
        let last_arg = "for name; do :; done\n";
        match init {
            Init::Systemd => {
                fs::create_dir_all(root.join("run/systemd/system")).unwrap();
                logger("systemctl", "");
                logger(
                    "groupadd",
                    &format!("{last_arg}echo \"$name:x:900:\" >>'{r}/etc/group'\n"),
                );
                logger(
                    "useradd",
                    &format!(
                        "{last_arg}echo \"$name:x:900:900::/:/bin/false\" >>'{r}/etc/passwd'\n"
                    ),
                );
            }
            Init::OpenRc => {
                write_exec(&root.join("sbin/openrc-run"), "#!/bin/sh\n");
                logger(
                    "rc-update",
                    &format!(
                        "case $1 in\n\
                         add) mkdir -p '{r}/etc/runlevels/'$3 && ln -s /etc/init.d/$2 '{r}/etc/runlevels/'$3/$2 ;;\n\
                         del) rm -f '{r}/etc/runlevels/'$3/$2 ;;\n\
                         esac\n"
                    ),
                );
                logger("rc-service", "");
                logger(
                    "addgroup",
                    &format!("{last_arg}echo \"$name:x:900:\" >>'{r}/etc/group'\n"),
                );
                logger(
                    "adduser",
                    &format!(
                        "{last_arg}echo \"$name:x:900:900::/:/bin/false\" >>'{r}/etc/passwd'\n"
                    ),
                );
            }
            Init::Procd => {
                fs::write(root.join("etc/openwrt_release"), "DISTRIB_ID='OpenWrt'\n").unwrap();
                fs::write(root.join("etc/shadow"), "root:::0:99999:7:::\n").unwrap();
                write_exec(
                    &root.join("etc/rc.common"),
                    &format!("#!/bin/sh\necho \"rc.common $*\" >>'{l}'\n"),
                );
                // No useradd, no adduser: the /etc/passwd fallback.
            }
            Init::Unknown => {}
        }

        // ssh HOST CMD...: run CMD here, in the fake root, with only the
        // fakes and HOST_TOOLS on PATH and nothing of this environment.
        write_exec(
            &tmp.0.join("ssh"),
            &format!(
                "#!/bin/sh\n\
                 echo \"ssh $*\" >>'{l}'\n\
                 while [ $# -gt 0 ]; do\n\
                 case $1 in -o|-p|-i|-l|-F|-J) shift 2 ;; -*) shift ;; *) break ;; esac\n\
                 done\n\
                 [ \"$1\" = '{HOST}' ] || {{ echo \"fake ssh: unexpected host $1\" >&2; exit 255; }}\n\
                 shift\n\
                 exec env -i PATH='{}:{}' HOME='{r}/root' TMPDIR='{r}/tmp' CCTELEGRAM_ROOT='{r}' sh -c \"$*\"\n",
                fakebin.display(),
                hostbin.display()
            ),
        );
        // scp [opts] SRC... HOST:DEST: copy into the fake device.
        write_exec(
            &tmp.0.join("scp"),
            &format!(
                "#!/bin/sh\n\
                 echo \"scp $*\" >>'{l}'\n\
                 while [ $# -gt 0 ]; do\n\
                 case $1 in -o|-P|-i|-F|-J) shift 2 ;; -*) shift ;; *) break ;; esac\n\
                 done\n\
                 for last; do :; done\n\
                 case $last in '{HOST}':/*) ;; *) echo \"fake scp: bad target $last\" >&2; exit 1 ;; esac\n\
                 dest=${{last#*:}}\n\
                 while [ $# -gt 1 ]; do cp \"$1\" \"$dest\" || exit 1; shift; done\n"
            ),
        );
        Device {
            tmp,
            root,
            log,
            dist,
        }
    }

    /// Puts the test binary where deploy/build-all would put `target`'s.
    fn build(&self, target: &str) {
        fs::copy(BIN, self.dist.join(format!("cctelegram-{target}"))).unwrap();
    }

    fn install(&self, args: &[&str]) -> Output {
        Command::new(deploy().join("install.sh"))
            .args(args)
            .arg(HOST)
            .env("SSH", self.tmp.0.join("ssh"))
            .env("SCP", self.tmp.0.join("scp"))
            .env("CCTELEGRAM_DIST", &self.dist)
            .env_remove("CCTELEGRAM_ROOT")
            .output()
            .unwrap()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    fn log(&self) -> String {
        read(&self.log)
    }

    /// How many logged commands are exactly `line` (with the fake root's
    /// path written as `$R`).
    fn count(&self, line: &str) -> usize {
        let r = self.root.display().to_string();
        self.log()
            .lines()
            .filter(|l| l.replace(&r, "$R") == line)
            .count()
    }

    /// Every path under the root with its type, mode and content.
    fn snapshot(&self) -> BTreeMap<String, String> {
        fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
            let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
            entries.sort_by_key(|e| e.path());
            for e in entries {
                let p = e.path();
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                let meta = fs::symlink_metadata(&p).unwrap();
                let m = meta.permissions().mode() & 0o7777;
                let desc = if meta.file_type().is_symlink() {
                    format!("link -> {}", fs::read_link(&p).unwrap().display())
                } else if meta.is_dir() {
                    walk(&p, base, out);
                    format!("dir {m:o}")
                } else {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    fs::read(&p).unwrap().hash(&mut h);
                    format!("file {m:o} {} {:x}", meta.len(), h.finish())
                };
                out.insert(rel, desc);
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.root, &self.root, &mut out);
        out
    }

    /// What every install leaves, whatever the init system.
    fn assert_installed(&self, bin: &str, unit: &str, unit_src: &str, unit_mode: u32) {
        assert!(
            fs::read(self.path(bin)).unwrap() == fs::read(BIN).unwrap(),
            "{bin} is not the binary that was given"
        );
        assert_eq!(mode(self.path(bin)), 0o755, "{bin}");
        assert_eq!(
            read(self.path(unit)),
            read(deploy().join(unit_src)),
            "{unit}"
        );
        assert_eq!(mode(self.path(unit)), unit_mode, "{unit}");
        // The unit runs the binary where install.sh put it.
        assert!(
            read(self.path(unit)).contains(bin),
            "{unit} does not run {bin}"
        );
        assert!(read(self.path(unit)).contains("/etc/cctelegram/config.toml"));

        let config = self.path("/etc/cctelegram/config.toml");
        assert_eq!(mode(&config), 0o600, "the config holds the bot token");
        // What a member of the group runs `cctelegram mcp` with: no secrets.
        let mcp = self.path("/etc/cctelegram/mcp.toml");
        assert_eq!(mode(&mcp), 0o640, "mcp.toml");
        let text = read(&mcp);
        assert!(
            text.contains("events_dir = \"/var/lib/cctelegram/events\""),
            "{text}"
        );
        assert!(
            text.contains("responses_dir = \"/var/lib/cctelegram/responses\""),
            "{text}"
        );
        assert!(!text.contains("token"), "{text}");
        assert!(
            self.count("chown 0:cctelegram $R/etc/cctelegram/mcp.toml.new") <= 1,
            "{}",
            self.log()
        );
        assert_eq!(mode(self.path("/etc/cctelegram")), 0o755);
        for (dir, m) in [
            ("/var/lib/cctelegram", 0o750),
            ("/var/lib/cctelegram/events", 0o2770),
            ("/var/lib/cctelegram/responses", 0o2750),
            ("/var/lib/cctelegram/state", 0o700),
        ] {
            assert_eq!(mode(self.path(dir)), m, "{dir}");
            let owner = format!("chown cctelegram:cctelegram $R{dir}");
            assert!(self.count(&owner) >= 1, "no `{owner}`\n{}", self.log());
        }
        assert!(
            self.count("chown cctelegram:cctelegram $R/etc/cctelegram/config.toml.new") == 1,
            "the config is chowned to the daemon's user once, when it is installed\n{}",
            self.log()
        );
        let users = read(self.path("/etc/passwd"))
            .lines()
            .filter(|l| l.starts_with("cctelegram:"))
            .count();
        assert_eq!(users, 1, "{}", read(self.path("/etc/passwd")));
        // Nothing is left in the staging area.
        assert_eq!(fs::read_dir(self.path("/tmp")).unwrap().count(), 0);
        // Every connection was in batch mode: no prompt can hang an install.
        for line in self
            .log()
            .lines()
            .filter(|l| l.starts_with("ssh ") || l.starts_with("scp "))
        {
            assert!(line.contains("-o BatchMode=yes"), "{line}");
        }
    }

    /// The admin puts a token in; returns the edited text.
    fn configure(&self) -> String {
        let path = self.path("/etc/cctelegram/config.toml");
        let edited = format!("# edited on the device\n{}", with_token(&read(&path)));
        fs::write(&path, &edited).unwrap();
        edited
    }
}

fn assert_ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", show(out));
    text(&out.stdout)
}

#[test]
fn install_sh_on_systemd_is_idempotent_and_uninstalls() {
    let dev = Device::new(Init::Systemd, "aarch64", 0);
    dev.build("aarch64-unknown-linux-musl");

    let first = assert_ok(&dev.install(&[]));
    dev.assert_installed(
        "/usr/local/bin/cctelegram",
        "/etc/systemd/system/cctelegram.service",
        "cctelegram.service",
        0o644,
    );
    assert_eq!(
        read(dev.path("/etc/cctelegram/config.toml")),
        read(deploy().join("config.example.toml"))
    );
    assert!(dev
        .path("/etc/init.d/cctelegram")
        .symlink_metadata()
        .is_err());
    assert_eq!(
        dev.count("groupadd --system cctelegram"),
        1,
        "{}",
        dev.log()
    );
    assert_eq!(
        dev.count(
            "useradd --system --gid cctelegram --home-dir /var/lib/cctelegram \
             --no-create-home --shell /bin/false --comment cctelegram daemon cctelegram"
        ),
        1,
        "{}",
        dev.log()
    );
    assert_eq!(dev.count("systemctl daemon-reload"), 1);
    assert_eq!(dev.count("systemctl enable cctelegram.service"), 1);
    // The example config has no token: enabled, not started, and told why.
    assert_eq!(dev.count("systemctl restart cctelegram.service"), 0);
    assert!(first.contains("set bot_token"), "{first}");
    assert!(first.contains("systemctl restart cctelegram"), "{first}");
    // Every remote step is echoed.
    let r = dev.root.display().to_string();
    for step in [
        format!("  + chmod 2770 {r}/var/lib/cctelegram/events"),
        format!("  + mv -f {r}/usr/local/bin/cctelegram.new {r}/usr/local/bin/cctelegram"),
        format!("  + {r}/usr/local/bin/cctelegram.new --version"),
        "  + /usr/local/bin/cctelegram check-config --config /etc/cctelegram/config.toml".into(),
        "  + systemctl enable cctelegram.service".into(),
    ] {
        assert!(first.contains(&step), "{step}\n{first}");
    }
    let version = format!("cctelegram {}", env!("CARGO_PKG_VERSION"));
    assert!(
        first.contains(&version),
        "the installed binary ran\n{first}"
    );

    // Second run, after the admin configured it: nothing on disk changes,
    // the config survives, the service is started.
    let edited = dev.configure();
    let before = dev.snapshot();
    let second = assert_ok(&dev.install(&[]));
    assert_eq!(before, dev.snapshot(), "a second install changed files");
    assert_eq!(read(dev.path("/etc/cctelegram/config.toml")), edited);
    assert!(
        second.contains("keeping /etc/cctelegram/config.toml"),
        "{second}"
    );
    assert!(
        second.contains("/usr/local/bin/cctelegram is up to date"),
        "{second}"
    );
    assert!(second.contains("user cctelegram exists"), "{second}");
    assert_eq!(dev.count("groupadd --system cctelegram"), 1);
    assert_eq!(
        dev.count("systemctl restart cctelegram.service"),
        1,
        "{}",
        dev.log()
    );

    // A broken config: installed, not started, exit 1, the key named.
    fs::write(
        dev.path("/etc/cctelegram/config.toml"),
        "[limits]\nglobal_per_second = \"fast\"\n",
    )
    .unwrap();
    let out = dev.install(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("limits.global_per_second"),
        "{}",
        show(&out)
    );
    assert!(stderr.contains("not started"), "{}", show(&out));
    assert_eq!(dev.count("systemctl restart cctelegram.service"), 1);
    fs::write(dev.path("/etc/cctelegram/config.toml"), &edited).unwrap();

    let out = assert_ok(&dev.install(&["--uninstall"]));
    assert_eq!(dev.count("systemctl disable --now cctelegram.service"), 1);
    assert!(!dev.path("/usr/local/bin/cctelegram").exists());
    assert!(!dev.path("/etc/systemd/system/cctelegram.service").exists());
    assert_eq!(read(dev.path("/etc/cctelegram/config.toml")), edited);
    assert_eq!(mode(dev.path("/var/lib/cctelegram/events")), 0o2770);
    assert!(out.contains("kept /etc/cctelegram/config.toml"), "{out}");
    // Uninstalling what is gone is not an error.
    let again = assert_ok(&dev.install(&["--uninstall"]));
    assert!(
        again.contains("no /etc/systemd/system/cctelegram.service"),
        "{again}"
    );
    assert_eq!(dev.count("systemctl disable --now cctelegram.service"), 1);
}

#[test]
fn install_sh_on_openrc_through_sudo() {
    // A login that is not root (uid 1000): the device side runs via sudo -n.
    let dev = Device::new(Init::OpenRc, "armv7l", 1000);
    dev.build("armv7-unknown-linux-musleabihf");

    let first = assert_ok(&dev.install(&[]));
    dev.assert_installed(
        "/usr/local/bin/cctelegram",
        "/etc/init.d/cctelegram",
        "cctelegram.openrc",
        0o755,
    );
    assert!(!dev.path("/etc/systemd").exists());
    assert!(first.contains("rc-service cctelegram restart"), "{first}");
    assert!(
        dev.log()
            .contains("sudo -n sh -s -- --on-device install openrc "),
        "{}",
        dev.log()
    );
    assert_eq!(dev.count("addgroup -S cctelegram"), 1, "{}", dev.log());
    assert_eq!(
        dev.count(
            "adduser -S -D -H -h /var/lib/cctelegram -s /bin/false -G cctelegram \
             -g cctelegram daemon cctelegram"
        ),
        1,
        "{}",
        dev.log()
    );
    assert_eq!(dev.count("rc-update add cctelegram default"), 1);
    assert_eq!(dev.count("rc-service cctelegram restart"), 0);

    let edited = dev.configure();
    let before = dev.snapshot();
    assert_ok(&dev.install(&[]));
    assert_eq!(before, dev.snapshot(), "a second install changed files");
    assert_eq!(read(dev.path("/etc/cctelegram/config.toml")), edited);
    assert_eq!(dev.count("rc-update add cctelegram default"), 1);
    assert_eq!(dev.count("rc-service cctelegram restart"), 1);

    assert_ok(&dev.install(&["--uninstall"]));
    assert_eq!(dev.count("rc-service cctelegram stop"), 1);
    assert_eq!(dev.count("rc-update del cctelegram default"), 1);
    assert!(dev
        .path("/etc/runlevels/default/cctelegram")
        .symlink_metadata()
        .is_err());
    assert!(!dev.path("/etc/init.d/cctelegram").exists());
    assert!(!dev.path("/usr/local/bin/cctelegram").exists());
    assert_eq!(read(dev.path("/etc/cctelegram/config.toml")), edited);
}

#[test]
fn install_sh_on_openwrt_with_a_given_binary() {
    // --binary: no build for this architecture is needed or looked for.
    openwrt(&Device::new(Init::Procd, "mips", 0));
}

#[test]
fn install_sh_device_side_runs_under_busybox() {
    let busybox = tools::require("busybox", "install.sh runs under its ash and applets");
    openwrt(&Device::with_tools(Init::Procd, "mips", 0, Some(&busybox)));
}

fn openwrt(dev: &Device) {
    let first = assert_ok(&dev.install(&["--binary", BIN]));
    dev.assert_installed(
        "/usr/bin/cctelegram",
        "/etc/init.d/cctelegram",
        "cctelegram.procd",
        0o755,
    );
    assert!(!dev.path("/usr/local/bin/cctelegram").exists());
    assert!(first.contains("/etc/init.d/cctelegram restart"), "{first}");
    // No user tools: entries written directly, with the first id free in
    // both files.
    let passwd = read(dev.path("/etc/passwd"));
    assert!(
        passwd.contains("cctelegram:x:202:202:cctelegram daemon:/var/lib/cctelegram:/bin/false\n"),
        "{passwd}"
    );
    assert!(read(dev.path("/etc/group")).contains("cctelegram:x:202:\n"));
    assert!(read(dev.path("/etc/shadow")).contains("cctelegram:*:"));
    assert_eq!(
        dev.count("rc.common $R/etc/init.d/cctelegram enable"),
        1,
        "{}",
        dev.log()
    );
    assert_eq!(dev.count("rc.common $R/etc/init.d/cctelegram restart"), 0);

    let edited = dev.configure();
    let before = dev.snapshot();
    assert_ok(&dev.install(&["--binary", BIN]));
    assert_eq!(before, dev.snapshot(), "a second install changed files");
    assert_eq!(read(dev.path("/etc/cctelegram/config.toml")), edited);
    assert_eq!(dev.count("rc.common $R/etc/init.d/cctelegram restart"), 1);

    // An upgrade with a binary that cannot run here (wrong architecture)
    // leaves the working one in place and is not started.
    let wrong = dev.tmp.0.join("cctelegram-wrong-arch");
    fs::write(&wrong, b"\x7fELF not for this CPU").unwrap();
    fs::set_permissions(&wrong, fs::Permissions::from_mode(0o755)).unwrap();
    let out = dev.install(&["--binary", wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("does not run on this device"),
        "{}",
        show(&out)
    );
    assert!(fs::read(dev.path("/usr/bin/cctelegram")).unwrap() == fs::read(BIN).unwrap());
    assert!(!dev.path("/usr/bin/cctelegram.new").exists());
    assert_eq!(dev.count("rc.common $R/etc/init.d/cctelegram restart"), 1);
    assert_eq!(fs::read_dir(dev.path("/tmp")).unwrap().count(), 0);

    assert_ok(&dev.install(&["--uninstall"]));
    assert_eq!(dev.count("rc.common $R/etc/init.d/cctelegram stop"), 1);
    assert_eq!(dev.count("rc.common $R/etc/init.d/cctelegram disable"), 1);
    assert!(!dev.path("/etc/init.d/cctelegram").exists());
    assert!(!dev.path("/usr/bin/cctelegram").exists());
    assert_eq!(read(dev.path("/etc/cctelegram/config.toml")), edited);
}

#[test]
fn install_sh_refuses_what_it_cannot_do() {
    let usage = |args: &[&str]| {
        let out = Command::new(deploy().join("install.sh"))
            .args(args)
            .env("SSH", "false")
            .env("SCP", "false")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}\n{}", show(&out));
        assert!(text(&out.stderr).contains("usage: deploy/install.sh"));
    };
    usage(&[]);
    usage(&["--bogus", HOST]);
    usage(&["--binary"]);
    usage(&[HOST, "root@other.invalid"]);
    usage(&["--uninstall", "--binary", BIN, HOST]);

    // No build for the device's architecture: say which file and how.
    let dev = Device::new(Init::Systemd, "armv6l", 0);
    let out = dev.install(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cctelegram-arm-unknown-linux-musleabihf is missing"),
        "{stderr}"
    );
    assert!(stderr.contains("deploy/build-all"), "{stderr}");
    assert!(!dev.path("/usr").join("local").exists());

    let dev = Device::new(Init::Systemd, "mips", 0);
    let out = dev.install(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("no build for architecture 'mips'"));

    let dev = Device::new(Init::Unknown, "aarch64", 0);
    dev.build("aarch64-unknown-linux-musl");
    let out = dev.install(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("unsupported init system"));
    // Nothing was staged or installed on a device it could not handle.
    assert_eq!(fs::read_dir(dev.path("/tmp")).unwrap().count(), 0);
    assert!(!dev.path("/etc/cctelegram").exists());

    // An unreachable device fails with a hint, not a hang.
    let out = Command::new(deploy().join("install.sh"))
        .arg(HOST)
        .env("SSH", "false")
        .env("SCP", "false")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("cannot run commands on"),
        "{}",
        show(&out)
    );
}
