//! A minimal HTTP/1.1 server for tests, on std only: one thread per
//! connection, keep-alive, bodies with Content-Length or chunked encoding.
//! It is the building block of the fake Telegram server and of any other
//! local fake (a webhook receiver, ...). It only ever binds 127.0.0.1.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often idle threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// Once a request has started, the rest of it must arrive within this.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle keep-alive connection is closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_LINE: u64 = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path without the query string, as sent (not percent-decoded).
    pub path: String,
    /// Raw query string without the '?', "" if none.
    pub query: String,
    /// Header names are lowercased; values are trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// First header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Extra headers; Content-Length and Connection are written by the server.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Close the connection without writing anything (simulates an outage).
    pub abort: bool,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        let headers = vec![("Content-Type".to_string(), content_type.to_string())];
        Response {
            status,
            headers,
            body: body.into(),
            abort: false,
        }
    }

    /// No response at all: the connection is closed as soon as the handler returns.
    pub fn abort() -> Self {
        let mut response = Response::new(0, "", Vec::new());
        response.abort = true;
        response
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Body reading speed, for tests that need an upload in flight: while
/// `bytes_per_sec` is non-zero, Content-Length bodies are read at about
/// that rate; `read` counts body bytes read so far (all requests).
#[derive(Default)]
pub struct Pace {
    pub bytes_per_sec: std::sync::atomic::AtomicU64,
    pub read: std::sync::atomic::AtomicU64,
    /// Non-zero: idle keep-alive connections are closed after this many
    /// ms instead of [`IDLE_TIMEOUT`], as servers do between requests.
    pub idle_close_ms: std::sync::atomic::AtomicU64,
    /// Connections accepted, and those closed for being idle.
    pub accepted: std::sync::atomic::AtomicU64,
    pub idle_closed: std::sync::atomic::AtomicU64,
}

/// Accepts connections until `stop` is set, one thread per connection.
/// Blocks the calling thread. The listener is polled (non-blocking) so a
/// stop is noticed within a few milliseconds.
pub fn serve(listener: TcpListener, handler: Handler, stop: Arc<AtomicBool>) {
    serve_paced(listener, handler, stop, Arc::new(Pace::default()))
}

/// [`serve`], reading bodies at `pace`.
pub fn serve_paced(
    listener: TcpListener,
    handler: Handler,
    stop: Arc<AtomicBool>,
    pace: Arc<Pace>,
) {
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                pace.accepted.fetch_add(1, Ordering::SeqCst);
                let (handler, stop, pace) = (handler.clone(), stop.clone(), pace.clone());
                thread::spawn(move || {
                    let _ = connection(stream, &handler, &stop, &pace);
                });
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// A server running on its own thread on 127.0.0.1; stopped on drop.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(handler: Handler) -> Server {
        Server::start_paced(handler, Arc::new(Pace::default()))
    }

    /// A server whose body reading follows `pace`.
    pub fn start_paced(handler: Handler, pace: Arc<Pace>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || serve_paced(listener, handler, flag, pace));
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting; idle connections close within `POLL`.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join(); // the listener is closed once this returns
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn connection(
    stream: TcpStream,
    handler: &Handler,
    stop: &AtomicBool,
    pace: &Pace,
) -> io::Result<()> {
    stream.set_nonblocking(false)?; // accepted sockets may inherit it on some OSes
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(&stream);
    loop {
        // Wait for the next request in short slices, so the thread notices a stop.
        stream.set_read_timeout(Some(POLL))?;
        let idle_since = Instant::now();
        let idle_limit = match pace.idle_close_ms.load(Ordering::SeqCst) {
            0 => IDLE_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            if idle_since.elapsed() > idle_limit {
                pace.idle_closed.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            match reader.fill_buf() {
                Ok([]) => return Ok(()), // peer closed
                Ok(_) => break,
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e),
            }
        }
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        let (request, keep_alive) = match read_request(&mut reader, pace) {
            Ok(r) => r,
            Err(e) => {
                let resp = Response::new(400, "text/plain", format!("bad request: {e}"));
                return write_response(&stream, &resp, false);
            }
        };
        let response = handler(&request);
        if response.abort {
            return Ok(()); // dropping the socket closes it without a byte of answer
        }
        write_response(&stream, &response, keep_alive)?;
        if !keep_alive {
            return Ok(());
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(e.kind(), WouldBlock | TimedOut | Interrupted)
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// One CRLF- (or LF-) terminated line, without its terminator.
fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut buf = Vec::new();
    r.take(MAX_LINE).read_until(b'\n', &mut buf)?;
    if buf.pop() != Some(b'\n') {
        return Err(invalid("truncated or overlong line"));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| invalid("non UTF-8 header"))
}

/// Reads one request; also says whether the connection may be kept alive.
fn read_request(r: &mut BufReader<&TcpStream>, pace: &Pace) -> io::Result<(Request, bool)> {
    let line = read_line(r)?;
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(invalid("bad request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(invalid("unsupported HTTP version"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| invalid("bad header"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: Vec::new(),
    };

    // HTTP/1.1 keeps the connection open unless told otherwise; 1.0 the reverse.
    let connection = req.header("connection").unwrap_or("").to_ascii_lowercase();
    let keep_alive = if version == "HTTP/1.0" {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };

    if req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        let mut stream: &TcpStream = r.get_ref();
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        loop {
            let line = read_line(r)?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                while !read_line(r)?.is_empty() {} // trailers, ignored
                break;
            }
            if req.body.len() + size > MAX_BODY {
                return Err(invalid("body too large"));
            }
            let start = req.body.len();
            req.body.resize(start + size, 0);
            r.read_exact(&mut req.body[start..])?;
            if !read_line(r)?.is_empty() {
                return Err(invalid("chunk not followed by CRLF"));
            }
        }
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.parse().map_err(|_| invalid("bad content-length"))?;
        if len > MAX_BODY {
            return Err(invalid("body too large"));
        }
        req.body.resize(len, 0);
        let mut at = 0;
        while at < len {
            let rate = pace.bytes_per_sec.load(Ordering::SeqCst);
            let step = if rate > 0 {
                (rate as usize / 20).max(1)
            } else {
                1 << 20
            };
            let end = (at + step).min(len);
            r.read_exact(&mut req.body[at..end])?;
            pace.read.fetch_add((end - at) as u64, Ordering::SeqCst);
            at = end;
            if rate > 0 {
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok((req, keep_alive))
}

fn write_response(mut stream: &TcpStream, resp: &Response, keep_alive: bool) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (name, value) in &resp.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    out.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&resp.body);
    stream.write_all(&bytes)?;
    stream.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Percent-decodes `s`; with `plus_as_space`, '+' means ' ' (form encoding).
pub fn percent_decode(s: &str, plus_as_space: bool) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_as_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Parses `a=1&b=x%20y` into pairs; fails on names/values that are not UTF-8.
pub fn parse_form(s: &str) -> Result<Vec<(String, String)>, std::string::FromUtf8Error> {
    let mut pairs = Vec::new();
    for part in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        pairs.push((
            String::from_utf8(percent_decode(k, true))?,
            String::from_utf8(percent_decode(v, true))?,
        ));
    }
    Ok(pairs)
}
