//! Attachments on their way out: which calls an event with files becomes,
//! and the streamed `multipart/form-data` bodies of those calls.
//!
//! ureq has no multipart encoder, and a 50 MB log must not become 50 MB
//! of memory on a router, so a body is a list of segments (part headers as
//! bytes, files as paths and lengths) read one after the other; its length
//! is the sum, known before the first byte goes out, so the request has a
//! Content-Length. [`plan`] is pure: an entry becomes the same steps after
//! a restart, so `parts_sent` counts them and a crash resumes at the step
//! Telegram had not yet taken.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::attach::{Stored, MAX_CAPTION};
use crate::config::ParseMode;
use crate::error::{Error, Result};
use crate::spool::Item;
use crate::telegram::api::Api;
use crate::telegram::render::{self, Part};

/// Photos in one `sendMediaGroup` (Telegram's limit).
pub const ALBUM_MAX: usize = 10;

/// A caption, formatted for the parse mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Caption {
    pub text: String,
    pub parse_mode: Option<&'static str>,
}

/// One Bot API call of an entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A text part; `force_reply` opens the reply field (`expects_reply`).
    Text { part: Part, force_reply: bool },
    Photo {
        file: Stored,
        caption: Option<Caption>,
    },
    Document {
        file: Stored,
        caption: Option<Caption>,
    },
    /// Two to ten photos; the caption goes on the first.
    Album {
        files: Vec<Stored>,
        caption: Option<Caption>,
    },
}

/// Telegram counts UTF-16 code units.
fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

fn mode_name(mode: ParseMode) -> Option<&'static str> {
    match mode {
        ParseMode::Html => Some("HTML"),
        ParseMode::MarkdownV2 => Some("MarkdownV2"),
        ParseMode::Plain => None,
    }
}

/// A writer's caption (plain text) escaped for `mode`.
fn escaped(text: &str, mode: ParseMode) -> String {
    let mut out = String::new();
    match mode {
        ParseMode::Html => render::escape_html(text, &mut out),
        ParseMode::MarkdownV2 => render::escape_markdown_v2(text, &mut out),
        ParseMode::Plain => out.push_str(text),
    }
    out
}

/// The calls that deliver `item` in `mode`, in order.
pub fn plan(item: &Item, mode: ParseMode) -> Vec<Step> {
    let parts = render::render(&item.event, mode);
    let ask = item.event.expects_reply();
    let mut steps = Vec::new();
    if item.files.is_empty() {
        let n = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let force_reply = ask && i + 1 == n && part.buttons.is_empty();
            steps.push(Step::Text { part, force_reply });
        }
        return steps;
    }
    let photos: Vec<&Stored> = item.files.iter().filter(|f| f.photo).collect();
    let docs: Vec<&Stored> = item.files.iter().filter(|f| !f.photo).collect();
    let first = photos.first().or(docs.first()).copied();
    let own = |f: &Stored| f.caption.as_deref().map(|c| escaped(c, mode));
    // The event's text is the first file's caption when it fits there
    // with that file's own caption; a question and buttons need a message.
    let lead = match (&parts[..], first) {
        ([p], Some(f)) if p.buttons.is_empty() && !ask => {
            let text = match own(f) {
                Some(c) => format!("{}\n\n{c}", p.text),
                None => p.text.clone(),
            };
            (units(&text) <= MAX_CAPTION).then_some(text)
        }
        _ => None,
    };
    if lead.is_none() {
        let n = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let force_reply = ask && i + 1 == n && part.buttons.is_empty();
            steps.push(Step::Text { part, force_reply });
        }
    }
    let caption_of = |f: &Stored, lead: &Option<String>| -> Option<Caption> {
        let text = if Some(f) == first {
            lead.clone().or_else(|| own(f))
        } else {
            own(f)
        }?;
        Some(Caption {
            text,
            parse_mode: mode_name(mode),
        })
    };
    for chunk in photos.chunks(ALBUM_MAX) {
        if let [one] = chunk {
            steps.push(Step::Photo {
                file: (*one).clone(),
                caption: caption_of(one, &lead),
            });
        } else {
            steps.push(Step::Album {
                files: chunk.iter().map(|f| (*f).clone()).collect(),
                caption: caption_of(chunk[0], &lead),
            });
        }
    }
    for f in docs {
        steps.push(Step::Document {
            file: f.clone(),
            caption: caption_of(f, &lead),
        });
    }
    steps
}

/// Adds the attachments' names and sizes to an `event_processed` payload
/// (an extra field: version 1 receivers ignore it).
pub fn describe(payload: &mut Value, files: &[Stored]) {
    if files.is_empty() {
        return;
    }
    let list: Vec<Value> = files
        .iter()
        .map(|f| json!({"name": f.name, "size": f.size, "photo": f.photo}))
        .collect();
    if let Some(ev) = payload.get_mut("event") {
        ev["attachments"] = Value::Array(list);
    }
}

/// How long an upload may take: a minute, plus 64 KiB/s for its bytes
/// (a slow uplink still finishes a 50 MB log).
fn upload_timeout(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / (64 * 1024))
}

impl Step {
    /// Makes the call; returns the message ids Telegram gave (an album
    /// has one per photo). `files` is `state_dir/files/`.
    /// `silent` sends it without sound; a `"CHAT/TOPIC"` target goes into
    /// that forum topic.
    pub fn send(&self, api: &Api, chat: &str, files: &Path, silent: bool) -> Result<Vec<i64>> {
        match self {
            Step::Text { part, force_reply } => api
                .send_message(chat, part, silent, *force_reply)
                .map(|id| vec![id]),
            Step::Photo { file, caption } => single(
                api,
                chat,
                files,
                silent,
                ("sendPhoto", "photo"),
                file,
                caption,
            ),
            Step::Document { file, caption } => single(
                api,
                chat,
                files,
                silent,
                ("sendDocument", "document"),
                file,
                caption,
            ),
            Step::Album {
                files: list,
                caption,
            } => {
                let mut form = Form::target(chat, silent);
                let media: Vec<Value> = list
                    .iter()
                    .enumerate()
                    .map(|(i, _)| {
                        let mut m = json!({"type": "photo", "media": format!("attach://f{i}")});
                        if let (0, Some(c)) = (i, caption) {
                            m["caption"] = json!(c.text);
                            if let Some(p) = c.parse_mode {
                                m["parse_mode"] = json!(p);
                            }
                        }
                        m
                    })
                    .collect();
                form.text("media", &Value::Array(media).to_string());
                for (i, f) in list.iter().enumerate() {
                    form.file(&format!("f{i}"), f, files)?;
                }
                let r = form.post(api, "sendMediaGroup")?;
                let ids: Vec<i64> = r
                    .as_array()
                    .map(|a| a.iter().filter_map(|m| m["message_id"].as_i64()).collect())
                    .unwrap_or_default();
                if ids.is_empty() {
                    return Err(Error::Transport(
                        "sendMediaGroup: the answer has no messages".into(),
                    ));
                }
                Ok(ids)
            }
        }
    }
}

fn message_id(r: &Value, method: &str) -> Result<i64> {
    r["message_id"]
        .as_i64()
        .ok_or_else(|| Error::Transport(format!("{method}: the answer has no message_id")))
}

fn single(
    api: &Api,
    chat: &str,
    dir: &Path,
    silent: bool,
    (method, field): (&str, &str),
    file: &Stored,
    caption: &Option<Caption>,
) -> Result<Vec<i64>> {
    let mut form = Form::target(chat, silent);
    if let Some(c) = caption {
        form.text("caption", &c.text);
        if let Some(p) = c.parse_mode {
            form.text("parse_mode", p);
        }
    }
    form.file(field, file, dir)?;
    let r = form.post(api, method)?;
    message_id(&r, method).map(|id| vec![id])
}

enum Segment {
    Bytes(Vec<u8>),
    File(PathBuf, u64),
}

/// A `multipart/form-data` body under construction.
pub struct Form {
    boundary: String,
    segments: Vec<Segment>,
}

/// A file name safe inside a quoted header value.
fn header_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("txt" | "log") => "text/plain",
        Some("json") => "application/json",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

impl Default for Form {
    fn default() -> Self {
        Form::new()
    }
}

impl Form {
    /// A form addressed to `chat` (a `"CHAT/TOPIC"` goes into the topic),
    /// without sound when `silent`.
    fn target(chat: &str, silent: bool) -> Form {
        let mut form = Form::new();
        form.text("chat_id", crate::telegram::api::base_chat(chat));
        if let Some(t) = crate::telegram::api::thread_of(chat) {
            form.text("message_thread_id", &t.to_string());
        }
        if silent {
            form.text("disable_notification", "true");
        }
        form
    }

    pub fn new() -> Form {
        let r: [u8; 12] = crate::store::random_bytes();
        Form {
            boundary: format!("cctelegram-{}", crate::store::hex(&r)),
            segments: Vec::new(),
        }
    }

    fn bytes(&mut self, b: Vec<u8>) {
        match self.segments.last_mut() {
            Some(Segment::Bytes(last)) => last.extend_from_slice(&b),
            _ => self.segments.push(Segment::Bytes(b)),
        }
    }

    pub fn text(&mut self, name: &str, value: &str) {
        let head = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n",
            self.boundary
        );
        self.bytes(head.into_bytes());
    }

    /// Adds a stored attachment; fails (for good: the copy is gone or
    /// damaged) if it is not the size recorded at acceptance.
    pub fn file(&mut self, name: &str, f: &Stored, dir: &Path) -> Result<()> {
        let path = dir.join(&f.file);
        let len = std::fs::metadata(&path)
            .map_err(|e| Error::io(&path, e))?
            .len();
        if len != f.size {
            // Damaged state: trying again cannot help.
            return Err(Error::Failed(format!(
                "{}: the copy is {len} bytes, {} were accepted",
                path.display(),
                f.size
            )));
        }
        self.path(name, &f.name, &path, len);
        Ok(())
    }

    /// Adds a file part read from `path` when the body is sent.
    pub fn path(&mut self, name: &str, file_name: &str, path: &Path, len: u64) {
        let head = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{}\"\r\n\
             Content-Type: {}\r\n\r\n",
            self.boundary,
            header_safe(file_name),
            content_type(file_name)
        );
        self.bytes(head.into_bytes());
        self.segments.push(Segment::File(path.to_path_buf(), len));
        self.bytes(b"\r\n".to_vec());
    }

    /// The Content-Type, the length and the body, ending the form.
    pub fn finish(mut self) -> (String, u64, Body) {
        let tail = format!("--{}--\r\n", self.boundary);
        self.bytes(tail.into_bytes());
        let len = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Bytes(b) => b.len() as u64,
                Segment::File(_, n) => *n,
            })
            .sum();
        let ct = format!("multipart/form-data; boundary={}", self.boundary);
        let body = Body {
            segments: self.segments.into(),
            current: None,
        };
        (ct, len, body)
    }

    fn post(self, api: &Api, method: &str) -> Result<Value> {
        let (ct, len, body) = self.finish();
        api.call_form(method, &ct, len, body, upload_timeout(len))
    }
}

/// The body as a reader: each segment in turn, files opened when reached.
pub struct Body {
    segments: VecDeque<Segment>,
    current: Option<(Box<dyn Read + Send>, u64)>,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((r, left)) = &mut self.current {
                if *left == 0 {
                    self.current = None;
                    continue;
                }
                let want = buf.len().min(*left as usize);
                let n = r.read(&mut buf[..want])?;
                if n == 0 {
                    // Fewer bytes than announced: the Content-Length would lie.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "an attachment shrank while it was sent",
                    ));
                }
                *left -= n as u64;
                return Ok(n);
            }
            match self.segments.pop_front() {
                None => return Ok(0),
                Some(Segment::Bytes(b)) => {
                    let n = b.len() as u64;
                    self.current = Some((Box::new(io::Cursor::new(b)), n));
                }
                Some(Segment::File(p, n)) => {
                    let f = File::open(&p)?;
                    self.current = Some((Box::new(f.take(n)), n));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(name: &str, photo: bool) -> Stored {
        Stored {
            file: format!("{name}.bin"),
            name: name.into(),
            size: 3,
            caption: None,
            photo,
        }
    }

    fn item(title: &str, files: Vec<Stored>, data: Value) -> Item {
        let text = json!({"type": "info_notification", "title": title, "data": data}).to_string();
        let event = crate::event::parse(text.as_bytes(), "now", || "evt_1".into()).expect("event");
        Item {
            files,
            ..Item::new(0, "1".into(), event)
        }
    }

    #[test]
    fn a_short_text_is_the_caption() {
        let s = plan(
            &item("hi", vec![stored("a.png", true)], json!({})),
            ParseMode::Html,
        );
        assert_eq!(s.len(), 1);
        assert!(matches!(&s[0], Step::Photo { caption: Some(c), .. } if c.text.contains("hi")));
    }

    #[test]
    fn a_long_text_goes_first_and_photos_make_albums() {
        let files = (0..12).map(|i| stored(&format!("{i}.jpg"), true)).collect();
        let s = plan(&item(&"x".repeat(1500), files, json!({})), ParseMode::Plain);
        assert!(matches!(&s[0], Step::Text { .. }));
        assert!(matches!(&s[1], Step::Album { files, caption: None } if files.len() == 10));
        assert!(matches!(&s[2], Step::Album { files, .. } if files.len() == 2));
    }

    #[test]
    fn a_question_asks_on_its_last_text() {
        let s = plan(
            &item(
                "q",
                vec![stored("a.log", false)],
                json!({"expects_reply": true}),
            ),
            ParseMode::Html,
        );
        assert!(matches!(
            &s[0],
            Step::Text {
                force_reply: true,
                ..
            }
        ));
        assert!(matches!(&s[1], Step::Document { caption: None, .. }));
    }

    #[test]
    fn the_body_is_as_long_as_announced() {
        let dir = std::env::temp_dir().join(format!("cct-upload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("f");
        std::fs::write(&p, vec![7u8; 100_000]).expect("write");
        let mut form = Form::new();
        form.text("chat_id", "42");
        form.path("document", "a\"b.log", &p, 100_000);
        let (ct, len, mut body) = form.finish();
        let mut out = Vec::new();
        body.read_to_end(&mut out).expect("read");
        assert_eq!(out.len() as u64, len);
        assert!(ct.starts_with("multipart/form-data; boundary="));
        assert!(String::from_utf8_lossy(&out).contains("filename=\"a_b.log\""));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
