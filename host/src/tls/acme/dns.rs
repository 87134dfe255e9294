//! A minimal DNS client: TXT lookups over UDP, to see whether a DNS-01
//! record has become visible on a resolver.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::UdpSocket;

const TYPE_TXT: u16 = 16;
const CLASS_IN: u16 = 1;
/// How long one query waits for its answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause between two looks at the resolver.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Waits until `resolver` answers every value of `expected` among the TXT
/// records of `name`, for at most `timeout`.
pub(super) async fn wait_for_txt(
    resolver: SocketAddr,
    name: &str,
    expected: &[&str],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let outcome = txt_records(resolver, name).await;
        if let Ok(values) = &outcome {
            if expected.iter().all(|e| values.iter().any(|v| v == e)) {
                return Ok(());
            }
        }
        if Instant::now() + POLL_INTERVAL > deadline {
            let seen = match outcome {
                Ok(values) => format!("it answered {values:?}"),
                Err(e) => format!("the last query failed: {e:#}"),
            };
            anyhow::bail!(
                "the TXT record {name} did not appear on the resolver {resolver} within {} ({seen})",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The TXT records of `name`, as `resolver` answers them.
async fn txt_records(resolver: SocketAddr, name: &str) -> anyhow::Result<Vec<String>> {
    let local: SocketAddr = if resolver.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(resolver).await?;
    let id: u16 = rand::random();
    socket.send(&query(id, name)?).await?;
    let mut buffer = vec![0u8; 4096];
    let received = tokio::time::timeout(QUERY_TIMEOUT, async {
        loop {
            let len = socket.recv(&mut buffer).await?;
            // Ignore stray datagrams that answer another query.
            if len >= 2 && buffer[..2] == id.to_be_bytes() {
                return Ok::<_, std::io::Error>(len);
            }
        }
    })
    .await
    .context("no answer")??;
    parse_txt(&buffer[..received])
}

/// A recursive query for the TXT records of `name`.
fn query(id: u16, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut packet = Vec::with_capacity(name.len() + 18);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0x01, 0x00]); // recursion desired
    packet.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.trim_end_matches('.').split('.') {
        anyhow::ensure!(
            !label.is_empty() && label.len() < 64,
            "{name:?} is not a DNS name"
        );
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&TYPE_TXT.to_be_bytes());
    packet.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(packet)
}

/// The TXT values in the answer section of `response`. A name that does
/// not exist has none.
fn parse_txt(response: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut reader = Reader {
        bytes: response,
        at: 0,
    };
    let _id = reader.u16()?;
    let flags = reader.u16()?;
    let questions = reader.u16()?;
    let answers = reader.u16()?;
    reader.skip(4)?; // authority and additional counts
    match flags & 0x000f {
        0 | 3 => {} // no error, or no such name
        rcode => anyhow::bail!("the resolver answered with error code {rcode}"),
    }
    for _ in 0..questions {
        reader.skip_name()?;
        reader.skip(4)?;
    }
    let mut values = Vec::new();
    for _ in 0..answers {
        reader.skip_name()?;
        let kind = reader.u16()?;
        reader.skip(6)?; // class and TTL
        let length = usize::from(reader.u16()?);
        let data = reader.take(length)?;
        if kind == TYPE_TXT {
            // One value, made of length-prefixed character strings.
            let mut value = Vec::new();
            let mut rest = data;
            while let Some((&len, tail)) = rest.split_first() {
                let len = usize::from(len);
                anyhow::ensure!(tail.len() >= len, "a TXT string runs past its record");
                value.extend_from_slice(&tail[..len]);
                rest = &tail[len..];
            }
            values.push(String::from_utf8_lossy(&value).into_owned());
        }
    }
    Ok(values)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> anyhow::Result<&'a [u8]> {
        let slice = self
            .bytes
            .get(self.at..self.at + len)
            .context("the DNS answer is truncated")?;
        self.at += len;
        Ok(slice)
    }

    fn skip(&mut self, len: usize) -> anyhow::Result<()> {
        self.take(len).map(drop)
    }

    fn u16(&mut self) -> anyhow::Result<u16> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// Skips a name: labels ending in a zero length or a compression pointer.
    fn skip_name(&mut self) -> anyhow::Result<()> {
        loop {
            let len = self.take(1)?[0];
            match len {
                0 => return Ok(()),
                len if len & 0xc0 == 0xc0 => return self.skip(1),
                len => self.skip(usize::from(len))?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to `query(7, "_acme-challenge.example.com")` with two TXT
    /// records, the second split in two strings, and a compressed name.
    fn answer() -> Vec<u8> {
        let mut packet = query(7, "_acme-challenge.example.com").unwrap();
        packet[2] = 0x81;
        packet[3] = 0x80;
        packet[7] = 2; // two answers
        for strings in [&["abc"][..], &["de", "f"][..]] {
            packet.extend_from_slice(&[0xc0, 12]); // the name in the question
            packet.extend_from_slice(&TYPE_TXT.to_be_bytes());
            packet.extend_from_slice(&CLASS_IN.to_be_bytes());
            packet.extend_from_slice(&60u32.to_be_bytes());
            let data: Vec<u8> = strings
                .iter()
                .flat_map(|s| std::iter::once(s.len() as u8).chain(s.bytes()))
                .collect();
            packet.extend_from_slice(&(data.len() as u16).to_be_bytes());
            packet.extend_from_slice(&data);
        }
        packet
    }

    #[test]
    fn builds_a_txt_query() {
        let packet = query(0x1234, "a.example.").unwrap();
        assert_eq!(
            packet,
            [
                0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 7, b'e', b'x', b'a', b'm', b'p',
                b'l', b'e', 0, 0, 16, 0, 1
            ]
        );
        assert!(query(1, "a..b").is_err());
    }

    #[test]
    fn parses_txt_answers() {
        assert_eq!(parse_txt(&answer()).unwrap(), ["abc", "def"]);
    }

    #[test]
    fn a_missing_name_has_no_records_and_errors_are_reported() {
        let mut nxdomain = query(7, "x.example.com").unwrap();
        nxdomain[3] = 0x83;
        assert!(parse_txt(&nxdomain).unwrap().is_empty());
        let mut servfail = nxdomain.clone();
        servfail[3] = 0x82;
        assert!(parse_txt(&servfail).is_err());
        let truncated = &answer()[..40];
        assert!(parse_txt(truncated).is_err());
    }
}
