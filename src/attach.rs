//! Event attachments (CONTRACT section 3): which files an event may name,
//! and the copies that make an accepted event durable with its files.
//!
//! A writer names files in `data.attachments`; the daemon must never read
//! anything outside `events_dir/files/` and `[paths] attachment_dirs`, so
//! every path is resolved (symlinks included) before it is opened, and the
//! opened file is checked again (`O_NOFOLLOW`, `fstat`) so that nothing
//! swapped in between is read. Accepted files are copied into
//! `state_dir/files/` under names derived from the event, never from what
//! the writer wrote; from then on the writer may delete its own.
//!
//! [`specs`] is pure (the shape of the field); [`take`] is the I/O.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::event::{kind_of, Event, Invalid};
use crate::store;

/// Telegram's limit for `sendPhoto`; bigger images go as documents.
pub const PHOTO_MAX: u64 = 10 * 1024 * 1024;

/// At most this many attachments in one event (an album holds 10; more
/// than a few albums is not a notification).
pub const MAX_FILES: usize = 20;

/// A caption longer than this (Telegram's 1024) is not a caption.
pub const MAX_CAPTION: usize = 1024;

/// One entry of `data.attachments`, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub path: String,
    pub caption: Option<String>,
}

/// An attachment copied into `state_dir/files/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// The copy's name inside `state_dir/files/`.
    pub file: String,
    /// The original file name, shown by Telegram.
    pub name: String,
    pub size: u64,
    #[serde(default)]
    pub caption: Option<String>,
    /// Sent with `sendPhoto` (an image up to [`PHOTO_MAX`]).
    pub photo: bool,
}

/// Where attachments may come from, and how big they may be.
pub struct Place<'a> {
    pub events_dir: &'a Path,
    pub allowed: &'a [PathBuf],
    pub max_bytes: u64,
}

/// What [`take`] copied, and which writer files to remove once the event
/// is accepted (those in `events_dir/files/` only).
#[derive(Debug, Default)]
pub struct Taken {
    pub stored: Vec<Stored>,
    pub sources: Vec<PathBuf>,
}

/// The directory of copies under `state_dir`.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("files")
}

fn wrong(field: String, want: &'static str, v: &Value) -> Invalid {
    Invalid::WrongType {
        field,
        want,
        found: kind_of(v),
    }
}

/// Reads `data.attachments`: a list of paths or of `{"path", "caption"}`.
pub fn specs(ev: &Event) -> Result<Vec<Spec>, Invalid> {
    let list = match ev.data.get("attachments") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(v) => return Err(wrong("data.attachments".into(), "a list of paths", v)),
    };
    if list.len() > MAX_FILES {
        return Err(Invalid::WrongType {
            field: "data.attachments".into(),
            want: "a list of at most 20 files",
            found: "a longer list",
        });
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let at = format!("data.attachments[{i}]");
        let (path, caption) = match item {
            Value::String(p) => (p.clone(), None),
            Value::Object(o) => {
                let path = match o.get("path") {
                    Some(Value::String(p)) => p.clone(),
                    None => return Err(Invalid::Missing("data.attachments[].path")),
                    Some(v) => return Err(wrong(format!("{at}.path"), "a string", v)),
                };
                let caption = match o.get("caption") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(c)) => Some(c.clone()),
                    Some(v) => return Err(wrong(format!("{at}.caption"), "a string", v)),
                };
                (path, caption)
            }
            v => return Err(wrong(at, "a path or {\"path\": ..., \"caption\": ...}", v)),
        };
        if path.trim().is_empty() {
            return Err(Invalid::Empty("data.attachments[].path"));
        }
        if caption
            .as_ref()
            .is_some_and(|c| c.chars().count() > MAX_CAPTION)
        {
            return Err(Invalid::TooLong {
                field: "data.attachments[].caption",
                limit: MAX_CAPTION,
            });
        }
        out.push(Spec { path, caption });
    }
    Ok(out)
}

/// Whether a file name is sent as a photo (by its extension).
pub fn is_image(name: &str) -> bool {
    let ext = extension(name);
    matches!(ext.as_str(), "jpg" | "jpeg" | "png" | "webp")
}

/// The extension, lowercased, if it is short and plain (it goes into the
/// copy's name).
fn extension(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((_, e))
            if !e.is_empty() && e.len() <= 8 && e.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            e.to_ascii_lowercase()
        }
        _ => String::new(),
    }
}

/// Resolves a path as written to the file it names, or says why it may
/// not be read. Also says whether it lies in `events_dir/files/`.
fn resolve(spec: &str, place: &Place) -> Result<(PathBuf, bool), String> {
    let written = Path::new(spec);
    let missing = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => "does not exist".to_string(),
        _ => format!("cannot be resolved: {e}"),
    };
    if written.is_relative() {
        if written
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err("leaves events_dir/files/ (\"..\" is not allowed)".into());
        }
        let files = place.events_dir.join("files");
        let root = files
            .canonicalize()
            .map_err(|_| "does not exist (there is no events_dir/files/ directory)".to_string())?;
        let real = files.join(written).canonicalize().map_err(missing)?;
        if !real.starts_with(&root) {
            return Err("points outside events_dir/files/ (through a symbolic link)".into());
        }
        return Ok((real, true));
    }
    let real = written.canonicalize().map_err(|e| match e.kind() {
        // An outside path is refused for where it is, not for whether it exists.
        io::ErrorKind::NotFound if !inside_allowed(written, place) => outside(),
        _ => missing(e),
    })?;
    if inside_allowed(&real, place) {
        Ok((real, false))
    } else {
        Err(outside())
    }
}

fn outside() -> String {
    "is outside events_dir/files/ and [paths] attachment_dirs; \
     copy it there or list its directory in attachment_dirs"
        .into()
}

fn inside_allowed(real: &Path, place: &Place) -> bool {
    place
        .allowed
        .iter()
        .filter_map(|d| d.canonicalize().ok())
        .any(|d| real.starts_with(d))
}

/// Opens a resolved path without following a symlink swapped in since, or
/// blocking on a pipe; checks it is a regular file within the size limit.
fn open(real: &Path, max: u64) -> Result<(File, u64), String> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(real)
        .map_err(|e| format!("cannot be read: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot be read: {e}"))?;
    if meta.is_dir() {
        return Err("is a directory, not a file".into());
    }
    if !meta.is_file() {
        return Err("is not a regular file (a pipe, socket or device)".into());
    }
    if meta.len() > max {
        return Err(too_big(meta.len(), max));
    }
    Ok((f, meta.len()))
}

fn too_big(size: u64, max: u64) -> String {
    format!("is {size} bytes, over [limits] max_attachment_bytes ({max} bytes)")
}

/// A reader that remembers whether the failure was its own, so that a
/// bad source (refuse the event) is told from a full disk (try again).
struct Source<R> {
    inner: R,
    failed: Option<String>,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            self.failed = Some(e.to_string());
        })
    }
}

/// The copy's name: from the event id and position, never from the
/// writer's path (CONTRACT: ids are not file names, so it is hashed).
fn copy_name(ev: &Event, index: usize, name: &str) -> String {
    let h = store::digest(&[ev.event_id.as_bytes(), b"\0", index.to_string().as_bytes()]);
    match extension(name).as_str() {
        "" => h[..32].to_string(),
        ext => format!("{}.{ext}", &h[..32]),
    }
}

/// Checks and copies every attachment of `ev` into `state_dir/files/`.
/// `Ok(Err(why))`: the event is refused (a bad attachment); `Err`: the
/// state directory could not take the copies (tried again later).
pub fn take(ev: &Event, place: &Place, state_dir: &Path) -> Result<Result<Taken, Invalid>> {
    let specs = match specs(ev) {
        Ok(s) => s,
        Err(why) => return Ok(Err(why)),
    };
    let mut taken = Taken::default();
    if specs.is_empty() {
        return Ok(Ok(taken));
    }
    let bad = |i: usize, spec: &Spec, problem: String| Invalid::Attachment {
        number: i + 1,
        path: spec.path.chars().take(200).collect(),
        problem,
    };
    let target = dir(state_dir);
    store::ensure_dir(&target)?;
    for (i, spec) in specs.iter().enumerate() {
        let (real, in_files) = match resolve(&spec.path, place) {
            Ok(r) => r,
            Err(p) => return Ok(Err(bad(i, spec, p))),
        };
        let (f, _) = match open(&real, place.max_bytes) {
            Ok(f) => f,
            Err(p) => return Ok(Err(bad(i, spec, p))),
        };
        let name = Path::new(&spec.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let file = copy_name(ev, i, &name);
        let mut src = Source {
            inner: f.take(place.max_bytes + 1),
            failed: None,
        };
        let size = match store::write_from(&target, &file, &mut src, 0o600) {
            Ok(n) => n,
            Err(_) if src.failed.is_some() => {
                let why = src.failed.unwrap_or_default();
                return Ok(Err(bad(i, spec, format!("cannot be read: {why}"))));
            }
            Err(e) => return Err(e),
        };
        if size > place.max_bytes {
            // It grew while it was copied.
            let _ = fs::remove_file(target.join(&file));
            return Ok(Err(bad(i, spec, too_big(size, place.max_bytes))));
        }
        taken.stored.push(Stored {
            photo: is_image(&name) && size <= PHOTO_MAX,
            file,
            name,
            size,
            caption: spec.caption.clone(),
        });
        if in_files {
            taken
                .sources
                .push(place.events_dir.join("files").join(&spec.path));
        }
    }
    store::sync_dir(&target)?;
    Ok(Ok(taken))
}

/// `cctelegram send --attach FILE`: copies `src` into `events_dir/files/`
/// atomically (temporary name, fsync, rename) under a fresh name that
/// keeps the original's, and returns the relative path to put in the event.
pub fn stage(events_dir: &Path, src: &Path) -> Result<String> {
    let f = File::open(src).map_err(|e| crate::error::Error::io(src, e))?;
    let meta = f.metadata().map_err(|e| crate::error::Error::io(src, e))?;
    if !meta.is_file() {
        return Err(crate::error::Error::Usage(format!(
            "--attach {}: not a regular file",
            src.display()
        )));
    }
    let files = events_dir.join("files");
    store::ensure_dir(&files)?;
    let base = src
        .file_name()
        .map(|n| crate::telegram::download::saved_name(0, Some(&n.to_string_lossy()), false))
        .unwrap_or_default();
    let base = base.strip_prefix("0_").unwrap_or(&base);
    let name = format!("{}_{base}", crate::event::new_id());
    let mut reader = f;
    store::write_from(&files, &name, &mut reader, 0o644)?;
    store::sync_dir(&files)?;
    Ok(name)
}

/// Removes the copies of a delivered event.
pub fn remove(state_dir: &Path, stored: &[Stored]) {
    let d = dir(state_dir);
    for s in stored {
        if let Err(e) = fs::remove_file(d.join(&s.file)) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("cannot remove the sent attachment files/{}: {e}", s.file);
            }
        }
    }
}

/// Removes copies no queue entry refers to and older than `keep_ms` (an
/// event refused or gone after its files were copied).
pub fn prune(state_dir: &Path, referenced: &std::collections::HashSet<String>, keep_ms: u64) {
    let Ok(entries) = fs::read_dir(dir(state_dir)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if referenced.contains(&name) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_millis() as u64 > keep_ms);
        if old {
            log::info!("removing files/{name}: no queued event refers to it");
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(data: Value) -> Event {
        let text = json!({"type": "info_notification", "title": "t", "data": data}).to_string();
        crate::event::parse(text.as_bytes(), "2026-01-01T00:00:00Z", || "evt_1".into())
            .expect("valid event")
    }

    #[test]
    fn specs_read_both_shapes() {
        let e = ev(json!({"attachments": ["a.png", {"path": "b.log", "caption": "the log"}]}));
        let s = specs(&e).expect("valid");
        assert_eq!(s[0].path, "a.png");
        assert_eq!(s[1].caption.as_deref(), Some("the log"));
        assert!(specs(&ev(json!({"attachments": "a.png"}))).is_err());
        assert!(specs(&ev(json!({"attachments": [{"caption": "x"}]}))).is_err());
        assert!(specs(&ev(json!({"attachments": [""]}))).is_err());
    }

    #[test]
    fn images_by_extension() {
        assert!(is_image("snap.JPG") && is_image("a.webp") && is_image("x.png"));
        assert!(!is_image("backup.log") && !is_image("png"));
        assert_eq!(extension("a.tar.gz"), "gz");
        assert_eq!(extension("weird.ext/../x"), "");
    }

    #[test]
    fn copy_names_do_not_come_from_the_writer() {
        let e = ev(json!({}));
        let n = copy_name(&e, 0, "../../etc/passwd");
        assert!(!n.contains('/') && !n.contains(".."), "{n}");
    }
}
