//! [`HeaderChanges`]: the header changes a hook makes, written as it makes
//! them into the encoding Sluice reads, so that handing them over is one
//! copy of one list of bytes.

use crate::header_changes::{decode, encode, encoded_len, Op};

/// Header changes, applied in the order they were made: a later change to
/// a header sees what the earlier ones did to it. Names are kept as
/// written, and Sluice reads them in any case, as HTTP does.
///
/// Each change is written straight into the bytes Sluice reads, so making
/// one costs a copy of its name and value and nothing more; read them back
/// with [`HeaderChanges::iter`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HeaderChanges {
    encoded: Vec<u8>,
}

/// One header change, as [`HeaderChanges::iter`] reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderChange<'a> {
    /// Replaces every value of the header: its name and the new value.
    Set(&'a str, &'a str),
    /// Adds a value to the header: its name and the value.
    Append(&'a str, &'a str),
    /// Removes every value of the header: its name.
    Remove(&'a str),
}

/// The room the first change makes for those that follow: a hook usually
/// makes a few, and growing the list copies it through the allocator.
const FIRST_CAPACITY: usize = 128;

impl HeaderChanges {
    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a header, replacing any value.
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.push(Op::Set, name, value);
    }

    /// Appends a header value.
    pub fn append_header(&mut self, name: &str, value: &str) {
        self.push(Op::Append, name, value);
    }

    /// Removes a header.
    pub fn remove_header(&mut self, name: &str) {
        self.push(Op::Remove, name, "");
    }

    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }

    /// The changes, in the order they were made. A name longer than 65,535
    /// bytes or a value longer than 4 GiB, which Sluice refuses, ends the
    /// list here.
    pub fn iter(&self) -> impl Iterator<Item = HeaderChange<'_>> {
        let text = |range: std::ops::Range<usize>| {
            // Names and values went in as `&str`: they are UTF-8.
            std::str::from_utf8(&self.encoded[range]).unwrap_or_default()
        };
        decode(&self.encoded)
            .map_while(Result::ok)
            .map(move |change| match change.op {
                Op::Set => HeaderChange::Set(text(change.name), text(change.value)),
                Op::Append => HeaderChange::Append(text(change.name), text(change.value)),
                Op::Remove => HeaderChange::Remove(text(change.name)),
            })
    }

    /// The encoded changes, as the contract hands them to Sluice.
    pub(crate) fn into_encoded(self) -> Vec<u8> {
        self.encoded
    }

    fn push(&mut self, op: Op, name: &str, value: &str) {
        let (name, value) = (name.as_bytes(), value.as_bytes());
        if self.encoded.capacity() == 0 {
            // Allocated outright: `reserve`'s growth path costs more.
            self.encoded = Vec::with_capacity(encoded_len(name, value).max(FIRST_CAPACITY));
        }
        encode(&mut self.encoded, op, name, value);
    }
}

impl std::fmt::Debug for HeaderChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_back_in_the_order_made() {
        let mut changes = HeaderChanges::new();
        assert!(changes.is_empty());
        changes.set_header("X-Real-Host", "Shop.Example.com");
        changes.remove_header("X-Debug");
        changes.append_header("via", "");
        changes.set_header("x-ünïcode", "välue");
        assert!(!changes.is_empty());
        assert_eq!(
            changes.iter().collect::<Vec<_>>(),
            [
                HeaderChange::Set("X-Real-Host", "Shop.Example.com"),
                HeaderChange::Remove("X-Debug"),
                HeaderChange::Append("via", ""),
                HeaderChange::Set("x-ünïcode", "välue"),
            ]
        );
        assert_eq!(
            format!("{changes:?}"),
            r#"[Set("X-Real-Host", "Shop.Example.com"), Remove("X-Debug"), Append("via", ""), Set("x-ünïcode", "välue")]"#
        );
    }

    #[test]
    fn the_encoding_is_what_sluice_decodes() {
        let mut changes = HeaderChanges::new();
        changes.append_header("ab", "xyz");
        assert_eq!(
            changes.into_encoded(),
            [1, 2, 0, b'a', b'b', 3, 0, 0, 0, b'x', b'y', b'z']
        );
    }

    #[test]
    fn an_oversized_name_ends_the_list() {
        let mut changes = HeaderChanges::new();
        changes.set_header("x-a", "1");
        changes.set_header(&"x".repeat(70_000), "2");
        changes.set_header("x-b", "3");
        assert_eq!(
            changes.iter().collect::<Vec<_>>(),
            [HeaderChange::Set("x-a", "1")]
        );
        assert!(!changes.is_empty());
    }
}
