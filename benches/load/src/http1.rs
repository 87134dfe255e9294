//! Reading HTTP/1.1 responses, for the runner's own clients: off a blocking
//! stream for the idle connections, and from what a non-blocking socket has
//! delivered so far for the fixed-rate generator.
//!
//! The framing is what the proxies under test send: a `Content-Length`
//! body, a chunked one (without trailers), or, with neither, a body that
//! ends with the connection.

use std::io::{self, Read};

/// How far the response at the start of a buffer has arrived.
#[derive(Debug, PartialEq)]
pub enum Progress {
    /// More must be read before the response ends.
    Incomplete,
    /// The whole response: its status, and whether the connection may carry
    /// another request.
    Complete { status: u16, keep_alive: bool },
    /// The head has arrived and the body ends with the connection.
    UntilClose { status: u16 },
}

/// Reads one HTTP/1.1 response from `stream` into `buf` (cleared first):
/// its status, and whether the connection may carry another request.
pub fn read_response(stream: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<(u16, bool)> {
    buf.clear();
    loop {
        match progress(buf)? {
            Progress::Complete { status, keep_alive } => return Ok((status, keep_alive)),
            Progress::Incomplete => fill(stream, buf)?,
            Progress::UntilClose { status } => {
                while read_some(stream, buf)? != 0 {}
                return Ok((status, false));
            }
        }
    }
}

/// How far the one response `buf` starts with has arrived.
pub fn progress(buf: &[u8]) -> io::Result<Progress> {
    let Some(head_len) = find(buf, b"\r\n\r\n").map(|end| end + 4) else {
        return Ok(Progress::Incomplete);
    };
    let head = parse_head(&buf[..head_len])?;
    let complete = match head.body {
        Body::Length(length) => buf.len() >= head_len + length,
        Body::Chunked => {
            let mut at = head_len;
            loop {
                match chunk_end(&buf[at..])? {
                    Some(ChunkEnd::Next(consumed)) => at += consumed,
                    Some(ChunkEnd::Last) => break true,
                    None => break false,
                }
            }
        }
        Body::UntilClose => {
            return Ok(Progress::UntilClose {
                status: head.status,
            })
        }
    };
    Ok(if complete {
        Progress::Complete {
            status: head.status,
            keep_alive: head.keep_alive,
        }
    } else {
        Progress::Incomplete
    })
}

/// Reads more into `buf`; the end of the stream here is an error.
fn fill(stream: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    if read_some(stream, buf)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Reads what `stream` has into `buf`; 0 at the end of the stream.
pub fn read_some(stream: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug, PartialEq)]
enum Body {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    keep_alive: bool,
    body: Body,
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed response: {what}"),
    )
}

/// Parses a response head, `\r\n\r\n` included.
fn parse_head(head: &[u8]) -> io::Result<Head> {
    let text = std::str::from_utf8(head).map_err(|_| malformed("head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = crate::procs::parse_status(head).map_err(|e| malformed(&format!("{e:#}")))?;
    let mut keep_alive = status_line.starts_with("HTTP/1.1");
    let mut length = None;
    let mut chunked = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or_else(|| malformed("header"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().map_err(|_| malformed("content-length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    let body = if chunked {
        Body::Chunked
    } else if let Some(length) = length {
        Body::Length(length)
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Body::Length(0)
    } else {
        keep_alive = false;
        Body::UntilClose
    };
    Ok(Head {
        status,
        keep_alive,
        body,
    })
}

#[derive(Debug, PartialEq)]
enum ChunkEnd {
    /// A chunk of this many bytes, its size line and CRLF included.
    Next(usize),
    /// The last chunk and the end of the body.
    Last,
}

/// Where the chunk at the start of `data` ends, or `None` if more must be
/// read first. Trailers are not expected.
fn chunk_end(data: &[u8]) -> io::Result<Option<ChunkEnd>> {
    let Some(line_end) = find(data, b"\r\n") else {
        return Ok(None);
    };
    let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| malformed("chunk size"))?;
    let size_text = size_text.split(';').next().unwrap_or_default().trim();
    let size = usize::from_str_radix(size_text, 16).map_err(|_| malformed("chunk size"))?;
    let end = line_end + 2 + size + 2;
    if data.len() < end {
        return Ok(None);
    }
    Ok(Some(if size == 0 {
        ChunkEnd::Last
    } else {
        ChunkEnd::Next(end)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_length_chunked_and_close_delimited_bodies() {
        let cases: [(&[u8], u16, bool); 3] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, true),
            (
                b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n\r\n",
                404,
                true,
            ),
            (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", 200, false),
        ];
        for (response, status, keep_alive) in cases {
            let mut buf = Vec::new();
            let got = read_response(&mut io::Cursor::new(response), &mut buf).unwrap();
            assert_eq!(got, (status, keep_alive));
        }
    }

    #[test]
    fn connection_close_and_truncation() {
        let mut buf = Vec::new();
        let close = b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            read_response(&mut io::Cursor::new(&close[..]), &mut buf).unwrap(),
            (503, false)
        );
        let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel";
        let err = read_response(&mut io::Cursor::new(&cut[..]), &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let garbage = b"SSH-2.0-OpenSSH\r\n\r\n";
        let err = read_response(&mut io::Cursor::new(&garbage[..]), &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn progress_tells_a_partial_response_from_a_whole_one() {
        let whole: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        for cut in 0..whole.len() {
            assert_eq!(
                progress(&whole[..cut]).unwrap(),
                Progress::Incomplete,
                "{cut}"
            );
        }
        assert_eq!(
            progress(whole).unwrap(),
            Progress::Complete {
                status: 200,
                keep_alive: true
            }
        );
        let sized = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\nConnection: close\r\n\r\nab";
        assert_eq!(progress(sized).unwrap(), Progress::Incomplete);
        assert_eq!(
            progress(&[&sized[..], b"c"].concat()).unwrap(),
            Progress::Complete {
                status: 502,
                keep_alive: false
            }
        );
        assert_eq!(
            progress(b"HTTP/1.0 200 OK\r\n\r\nsome of it").unwrap(),
            Progress::UntilClose { status: 200 }
        );
    }

    #[test]
    fn a_204_has_no_body() {
        let mut buf = Vec::new();
        let no_content = b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n";
        assert_eq!(
            read_response(&mut io::Cursor::new(&no_content[..]), &mut buf).unwrap(),
            (204, true)
        );
    }

    #[test]
    fn a_body_in_pieces_is_read_to_its_end() {
        // One byte per read, as a slow server would send it.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let Some((first, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                out[0] = *first;
                self.0 = rest;
                Ok(1)
            }
        }
        let responses: [&[u8]; 2] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ];
        for response in responses {
            let mut buf = Vec::new();
            assert_eq!(
                read_response(&mut Trickle(response), &mut buf).unwrap(),
                (200, true)
            );
            assert_eq!(buf, response);
        }
    }
}
