//! One error type for the whole crate.
//!
//! Each variant keeps what a person needs to act on the failure; where there
//! is an underlying error it stays reachable through `source()`.
//! [`Error::is_retryable`] is the single place that decides whether trying
//! again later can help. No variant ever holds the bot token: transport
//! errors are redacted before they are stored (see `telegram::api`).

use std::fmt;
use std::io;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    /// A file system operation failed on `path`.
    Io { path: PathBuf, source: io::Error },
    /// A configuration key has a wrong type or an impossible value.
    Config { key: String, problem: String },
    /// The command line is wrong.
    Usage(String),
    /// Telegram answered with `ok: false`.
    Telegram {
        status: u16,
        description: String,
        retry_after: Option<u64>,
    },
    /// No usable HTTP answer: connection refused, reset, timed out, TLS, or
    /// an answer that is not the Bot API's JSON. The text is already redacted.
    Transport(String),
    /// A command finished but did not succeed (a signature that does not
    /// verify, a replay that failed again): exit code 1 with this text.
    Failed(String),
    /// JSON that we wrote ourselves could not be read back (a damaged state file).
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn config(key: impl Into<String>, problem: impl Into<String>) -> Error {
        Error::Config {
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// Whether the same request may succeed later without anyone changing
    /// anything: network trouble, rate limits, Telegram's own failures, and a
    /// token Telegram does not (yet) accept, since a message must wait for the
    /// owner to fix the token rather than be dropped.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Telegram { status, .. } => {
                matches!(status, 401 | 404 | 408 | 409 | 429) || *status >= 500
            }
            Error::Io { source, .. } => !matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ),
            Error::Config { .. } | Error::Usage(_) | Error::Json { .. } | Error::Failed(_) => false,
        }
    }

    /// Telegram refused the message's formatting; the caller re-sends it as
    /// plain text.
    pub fn is_bad_entities(&self) -> bool {
        matches!(self, Error::Telegram { status: 400, description, .. }
            if description.contains("can't parse entities"))
    }

    /// An edit that changes nothing: the message already shows it.
    pub fn is_not_modified(&self) -> bool {
        matches!(self, Error::Telegram { status: 400, description, .. }
            if description.contains("message is not modified"))
    }

    /// An edit refused because the message is gone or too old to edit.
    pub fn is_message_gone(&self) -> bool {
        matches!(self, Error::Telegram { status: 400, description, .. }
            if description.contains("message to edit not found")
                || description.contains("message can't be edited")
                || description.contains("MESSAGE_ID_INVALID"))
    }

    /// The process exit code this error maps to (CONTRACT section 1).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 64,
            Error::Config { .. } => 78,
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Config { key, problem } => write!(f, "bad configuration: {key}: {problem}"),
            Error::Usage(msg) => f.write_str(msg),
            Error::Telegram {
                status,
                description,
                retry_after,
            } => {
                write!(f, "Telegram answered {status}: {description}")?;
                if let Some(s) = retry_after {
                    write!(f, " (retry after {s} s)")?;
                }
                Ok(())
            }
            Error::Transport(msg) => write!(f, "cannot reach Telegram: {msg}"),
            Error::Failed(msg) => f.write_str(msg),
            Error::Json { path, source } => {
                write!(f, "{}: damaged state file: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Json { source, .. } => Some(source),
            _ => None,
        }
    }
}
