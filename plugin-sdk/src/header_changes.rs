//! The byte encoding in which a plugin hands a message's header changes to
//! Sluice: the SDK writes it, the host reads it. Part of the contract, like
//! `wit/plugin.wit`: the host compiles this same file, so the two sides
//! cannot disagree on it.
//!
//! A list of records, each with two strings, crossed into the host as one
//! allocation and one UTF-8 check per string, most of a hook's cost in
//! changing headers. One list of bytes crosses as one copy, and the host
//! can keep the values as slices of it. Each change is:
//!
//! | bytes | what |
//! | --- | --- |
//! | 1 | the operation: 0 set, 1 append, 2 remove |
//! | 2 | the name's length, little-endian |
//! | that many | the name |
//! | 4 | the value's length, little-endian (0 for remove) |
//! | that many | the value |
//!
//! The encoding only frames the changes: whether a name or a value is
//! valid HTTP is the host's check, as it was when each was a string.

/// What a header change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Replaces every value of the header.
    Set = 0,
    /// Adds a value to the header.
    Append = 1,
    /// Removes every value of the header.
    Remove = 2,
}

/// The operation byte that stands for a change whose name or value is too
/// long to frame: the host reads it as [`Malformed::TooLong`].
const TOO_LONG: u8 = 3;

/// The bytes [`encode`] writes for one change.
pub fn encoded_len(name: &[u8], value: &[u8]) -> usize {
    7 + name.len() + value.len()
}

/// Appends one change to `encoded`. A name longer than 65,535 bytes or a
/// value longer than 4 GiB, which no valid header has, is written as a
/// marker the host refuses.
#[inline]
pub fn encode(encoded: &mut Vec<u8>, op: Op, name: &[u8], value: &[u8]) {
    let (Ok(name_len), Ok(value_len)) = (u16::try_from(name.len()), u32::try_from(value.len()))
    else {
        encoded.push(TOO_LONG);
        return;
    };
    encoded.reserve(encoded_len(name, value));
    let [name_low, name_high] = name_len.to_le_bytes();
    // The fixed-size framing is written in one store, not three.
    encoded.extend_from_slice(&[op as u8, name_low, name_high]);
    encoded.extend_from_slice(name);
    encoded.extend_from_slice(&value_len.to_le_bytes());
    encoded.extend_from_slice(value);
}

/// One decoded change: the operation and where its name and value lie in
/// the encoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What the change does.
    pub op: Op,
    /// The name's byte range.
    pub name: std::ops::Range<usize>,
    /// The value's byte range (empty for a remove).
    pub value: std::ops::Range<usize>,
}

/// Why an encoded list could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// The change at this byte offset has an operation byte that is none
    /// of set, append and remove.
    UnknownOp(usize),
    /// The change at this byte offset had a name or a value too long to
    /// frame.
    TooLong(usize),
    /// The change at this byte offset runs past the end of the list.
    Truncated(usize),
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownOp(at) => {
                write!(f, "the header change at byte {at} has an unknown operation")
            }
            Self::TooLong(at) => write!(
                f,
                "the header change at byte {at} has a name or value too long to be a header"
            ),
            Self::Truncated(at) => write!(f, "the header change at byte {at} is cut short"),
        }
    }
}

/// The changes in `encoded`, in order, each as ranges into `encoded`.
pub fn decode(encoded: &[u8]) -> Decode<'_> {
    Decode { encoded, at: 0 }
}

/// An iterator over encoded changes; see [`decode`].
#[derive(Debug)]
pub struct Decode<'a> {
    encoded: &'a [u8],
    at: usize,
}

impl Decode<'_> {
    fn read(&mut self, start: usize) -> Result<Change, Malformed> {
        let truncated = Malformed::Truncated(start);
        let op = match self.encoded[start] {
            0 => Op::Set,
            1 => Op::Append,
            2 => Op::Remove,
            TOO_LONG => return Err(Malformed::TooLong(start)),
            _ => return Err(Malformed::UnknownOp(start)),
        };
        let take = |at: usize, len: usize| -> Result<std::ops::Range<usize>, Malformed> {
            let end = at.checked_add(len).ok_or(truncated.clone())?;
            if end > self.encoded.len() {
                return Err(truncated.clone());
            }
            Ok(at..end)
        };
        let name_len = take(start + 1, 2)?;
        let name_len = u16::from_le_bytes([
            self.encoded[name_len.start],
            self.encoded[name_len.start + 1],
        ]);
        let name = take(start + 3, usize::from(name_len))?;
        let value_len = take(name.end, 4)?;
        let mut len = [0; 4];
        len.copy_from_slice(&self.encoded[value_len.clone()]);
        let value = take(value_len.end, u32::from_le_bytes(len) as usize)?;
        self.at = value.end;
        Ok(Change { op, name, value })
    }
}

impl Iterator for Decode<'_> {
    type Item = Result<Change, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.encoded.len() {
            return None;
        }
        let change = self.read(self.at);
        if change.is_err() {
            // Nothing after a malformed change can be framed.
            self.at = self.encoded.len();
        }
        Some(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoded change with its name and value as bytes.
    type Read<'a> = Result<(Op, &'a [u8], &'a [u8]), Malformed>;

    fn decoded(encoded: &[u8]) -> Vec<Read<'_>> {
        decode(encoded)
            .map(|change| {
                change.map(|c| (c.op, &encoded[c.name.clone()], &encoded[c.value.clone()]))
            })
            .collect()
    }

    #[test]
    fn changes_read_back_in_order() {
        let mut encoded = Vec::new();
        encode(&mut encoded, Op::Remove, b"x-old", b"");
        encode(&mut encoded, Op::Set, b"x-real-host", b"shop.example.com");
        encode(&mut encoded, Op::Append, b"via", b"");
        assert_eq!(
            decoded(&encoded),
            [
                Ok((Op::Remove, &b"x-old"[..], &b""[..])),
                Ok((Op::Set, &b"x-real-host"[..], &b"shop.example.com"[..])),
                Ok((Op::Append, &b"via"[..], &b""[..])),
            ]
        );
        assert!(decoded(&[]).is_empty());
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let mut encoded = Vec::new();
        encode(&mut encoded, Op::Append, b"ab", b"xyz");
        assert_eq!(encoded, [1, 2, 0, b'a', b'b', 3, 0, 0, 0, b'x', b'y', b'z']);
        assert_eq!(encoded.len(), encoded_len(b"ab", b"xyz"));
    }

    #[test]
    fn malformed_lists_stop_at_the_bad_change() {
        let mut encoded = Vec::new();
        encode(&mut encoded, Op::Set, b"x-a", b"1");
        let good = encoded.len();
        encoded.push(7);
        assert_eq!(decoded(&encoded)[1], Err(Malformed::UnknownOp(good)));
        assert_eq!(decoded(&encoded).len(), 2);
        for cut in 1..good {
            assert_eq!(
                decoded(&encoded[..cut]),
                [Err(Malformed::Truncated(0))],
                "cut at {cut}"
            );
        }
        let mut encoded = Vec::new();
        encode(&mut encoded, Op::Set, &[b'x'; 70_000], b"1");
        encode(&mut encoded, Op::Set, b"x-a", b"1");
        assert_eq!(decoded(&encoded), [Err(Malformed::TooLong(0))]);
        // A value length that overflows the offsets is cut short, not wrapped.
        let huge = [0, 1, 0, b'x', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(decoded(&huge), [Err(Malformed::Truncated(0))]);
    }
}
