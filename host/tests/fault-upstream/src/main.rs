//! A test-only HTTP/1.1 upstream that runs as its own process, so a test can
//! kill it with SIGKILL, and that misbehaves on purpose when asked.
//!
//! `fault-upstream [--listen ADDR] [--name NAME]` listens on `ADDR`
//! (`127.0.0.1:0` by default) and prints `listening on ADDR` once it accepts.
//! Each request's path chooses what it does:
//!
//! - `/fault/<fault>`: one of the faults in [`Fault`], then the connection
//!   closes;
//! - `/delay/<ms>`: the answer below, after that many milliseconds;
//! - `/large-head/<bytes>`: the answer below, with an `X-Large` header
//!   that makes its head about that large;
//! - anything else: `200`, a keep-alive answer whose body is `ok NAME` and
//!   whose `X-Served-By` header is `NAME`.
//!
//! It uses only the standard library, a thread per connection, so it builds
//! in a moment and behaves the same under any runtime.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

/// What a `/fault/<fault>` request gets.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Read the request and close the connection before answering.
    CloseBeforeHead,
    /// Send a head with `Content-Length: 100`, 9 bytes of body, and close.
    CloseMidBody,
    /// Send a chunked head and one chunk, then close without the last chunk.
    ChunkedCloseMidBody,
    /// Send a line that is not an HTTP status line.
    GarbageHead,
    /// Send `Content-Length: 12abc`.
    BadContentLength,
    /// Send two `Content-Length` headers that disagree.
    TwoContentLengths,
    /// Send a chunked head, then a chunk whose size is not hexadecimal.
    BadChunk,
    /// Send a header value with a NUL byte in it.
    NulInHeader,
    /// Send a head with one 200 KB header.
    OversizedHead,
    /// Answer as HTTP/0.9 does: the body alone, no status line, then close.
    Http09,
    /// Send an interim `100 Continue`, then close before the final head.
    ContinueThenClose,
}

impl Fault {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "close-before-head" => Self::CloseBeforeHead,
            "close-mid-body" => Self::CloseMidBody,
            "chunked-close-mid-body" => Self::ChunkedCloseMidBody,
            "garbage-head" => Self::GarbageHead,
            "bad-content-length" => Self::BadContentLength,
            "two-content-lengths" => Self::TwoContentLengths,
            "bad-chunk" => Self::BadChunk,
            "nul-in-header" => Self::NulInHeader,
            "oversized-head" => Self::OversizedHead,
            "http09" => Self::Http09,
            "continue-then-close" => Self::ContinueThenClose,
            _ => return None,
        })
    }

    /// The bytes sent before the connection closes.
    fn answer(self) -> Vec<u8> {
        let text: &[u8] = match self {
            Self::CloseBeforeHead => b"",
            Self::CloseMidBody => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ntruncated",
            Self::ChunkedCloseMidBody => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\ntruncated\r\n"
            }
            Self::GarbageHead => b"this is not an HTTP response\r\n\r\n",
            Self::BadContentLength => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\nhello world!"
            }
            Self::TwoContentLengths => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 11\r\n\r\nhello world"
            }
            Self::BadChunk => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
            }
            Self::NulInHeader => b"HTTP/1.1 200 OK\r\nX-Bad: a\0b\r\nContent-Length: 2\r\n\r\nok",
            Self::OversizedHead => {
                let mut head = b"HTTP/1.1 200 OK\r\nX-Large: ".to_vec();
                head.resize(head.len() + 200_000, b'a');
                head.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
                return head;
            }
            Self::Http09 => b"a body with no status line\n",
            Self::ContinueThenClose => b"HTTP/1.1 100 Continue\r\n\r\n",
        };
        text.to_vec()
    }
}

fn main() {
    let mut listen = "127.0.0.1:0".to_string();
    let mut name = "fault".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--listen" => listen = value,
            "--name" => name = value,
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    let listener = TcpListener::bind(&listen).unwrap_or_else(|e| {
        eprintln!("fault-upstream: cannot listen on {listen}: {e}");
        std::process::exit(1);
    });
    let address = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {address}");
    io::stdout().flush().expect("stdout is writable");
    let name: &'static str = Box::leak(name.into_boxed_str());
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || serve(stream, name));
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("fault-upstream: {problem}\nusage: fault-upstream [--listen ADDR] [--name NAME]");
    std::process::exit(2);
}

/// Answers the requests of one connection until it closes or a fault ends it.
fn serve(stream: TcpStream, name: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut writer = writer;
    while let Ok(Some(path)) = read_request(&mut reader) {
        if let Some(fault) = path.strip_prefix("/fault/").and_then(Fault::from_name) {
            let _ = writer.write_all(&fault.answer());
            let _ = writer.flush();
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        if let Some(millis) = path.strip_prefix("/delay/").and_then(|m| m.parse().ok()) {
            std::thread::sleep(Duration::from_millis(millis));
        }
        let padding = path
            .strip_prefix("/large-head/")
            .and_then(|size| size.parse::<usize>().ok())
            .map_or(String::new(), |size| {
                format!("X-Large: {}\r\n", "a".repeat(size))
            });
        let body = format!("ok {name}\n");
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nX-Served-By: {name}\r\n{padding}\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(body.as_bytes()).is_err()
        {
            return;
        }
    }
}

/// Reads one request head and drains its `Content-Length` body; returns the
/// request's path, or `None` once the client has closed the connection.
fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<String>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut body_length = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((field, value)) = header.split_once(':') {
            if field.eq_ignore_ascii_case("content-length") {
                body_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    io::copy(
        &mut reader.by_ref().take(body_length as u64),
        &mut io::sink(),
    )?;
    Ok(Some(path))
}
