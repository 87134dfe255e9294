//! Header rules: remove, then set, then add.

use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::config::HeaderRules;

/// Compiled header rules, with names and values checked once at load time.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

/// A header rule that cannot be compiled: which list, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRuleError {
    /// `set`, `add` or `remove`.
    pub list: &'static str,
    /// The header name as written (or the index, for `remove`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl HeaderOps {
    /// Compiles rules, reporting every invalid name or value.
    pub fn compile(rules: &HeaderRules) -> Result<Self, Vec<HeaderRuleError>> {
        let mut errors = Vec::new();
        let mut pairs = |list: &'static str, map: &std::collections::BTreeMap<String, String>| {
            map.iter()
                .filter_map(|(name, value)| {
                    match (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(value),
                    ) {
                        (Ok(name), Ok(value)) => Some((name, value)),
                        (Err(_), _) => {
                            errors.push(HeaderRuleError {
                                list,
                                key: name.clone(),
                                message: "not a valid header name".into(),
                            });
                            None
                        }
                        (_, Err(_)) => {
                            errors.push(HeaderRuleError {
                                list,
                                key: name.clone(),
                                message: "not a valid header value".into(),
                            });
                            None
                        }
                    }
                })
                .collect::<Vec<_>>()
        };
        let set = pairs("set", &rules.set);
        let add = pairs("add", &rules.add);
        let remove = rules
            .remove
            .iter()
            .enumerate()
            .filter_map(|(i, name)| match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => Some(name),
                Err(_) => {
                    errors.push(HeaderRuleError {
                        list: "remove",
                        key: i.to_string(),
                        message: format!("{name:?} is not a valid header name"),
                    });
                    None
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(Self { remove, set, add })
        } else {
            Err(errors)
        }
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the rules to a request going upstream or a response going
    /// to the client.
    pub fn apply(&self, message: &mut impl HeaderMessage) {
        for name in &self.remove {
            message.remove(name.as_str());
        }
        for (name, value) in &self.set {
            message.set(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            message.append(name.clone(), value.clone());
        }
    }
}

/// The most header values a message may carry after rules and plugins have
/// edited it. A client's HTTP/1 head holds at most 256; the bound keeps a
/// plugin from growing a message toward the header map's hard limit, where
/// inserting panics.
pub const MAX_MESSAGE_HEADERS: usize = 1024;

/// Request and response headers, edited the same way by header rules and
/// by plugins.
pub trait HeaderMessage {
    /// Removes every value of `name`.
    fn remove(&mut self, name: &str);
    /// Replaces `name`'s values with `value`; false when Pingora refuses it
    /// or the message is full.
    fn set(&mut self, name: HeaderName, value: HeaderValue) -> bool;
    /// Adds a value of `name`; false when Pingora refuses it or the message
    /// is full.
    fn append(&mut self, name: HeaderName, value: HeaderValue) -> bool;
}

/// Whether a message with these headers has room for one more value of
/// `name` (a replaced name takes no more room).
fn has_room(headers: &http::HeaderMap, name: &HeaderName, replacing: bool) -> bool {
    headers.len() < MAX_MESSAGE_HEADERS || (replacing && headers.contains_key(name))
}

impl HeaderMessage for RequestHeader {
    fn remove(&mut self, name: &str) {
        self.remove_header(name);
    }

    fn set(&mut self, name: HeaderName, value: HeaderValue) -> bool {
        has_room(&self.headers, &name, true) && self.insert_header(name, value).is_ok()
    }

    fn append(&mut self, name: HeaderName, value: HeaderValue) -> bool {
        has_room(&self.headers, &name, false) && self.append_header(name, value).is_ok()
    }
}

impl HeaderMessage for ResponseHeader {
    fn remove(&mut self, name: &str) {
        self.remove_header(name);
    }

    fn set(&mut self, name: HeaderName, value: HeaderValue) -> bool {
        has_room(&self.headers, &name, true) && self.insert_header(name, value).is_ok()
    }

    fn append(&mut self, name: HeaderName, value: HeaderValue) -> bool {
        has_room(&self.headers, &name, false) && self.append_header(name, value).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_message_takes_no_new_values_but_replaces_existing_ones() {
        let mut response = ResponseHeader::build(200, None).unwrap();
        for i in 0..MAX_MESSAGE_HEADERS {
            let name = HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap();
            assert!(response.append(name, HeaderValue::from_static("v")), "{i}");
        }
        let extra = HeaderName::from_static("x-extra");
        assert!(!response.append(extra.clone(), HeaderValue::from_static("v")));
        assert!(!response.set(extra, HeaderValue::from_static("v")));
        let existing = HeaderName::from_static("x-h3");
        assert!(response.set(existing, HeaderValue::from_static("new")));
        assert_eq!(response.headers.len(), MAX_MESSAGE_HEADERS);
    }

    fn rules(text: &str) -> HeaderRules {
        crate::config::fragment(text)
    }

    #[test]
    fn remove_then_set_then_add() {
        let ops = HeaderOps::compile(&rules(
            "remove = [\"x-debug\", \"x-env\"]\nset = { x-env = \"prod\" }\nadd = { x-tag = \"b\" }",
        ))
        .unwrap();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-debug", "1").unwrap();
        req.insert_header("x-env", "dev").unwrap();
        req.insert_header("x-tag", "a").unwrap();
        ops.apply(&mut req);
        assert!(req.headers.get("x-debug").is_none());
        assert_eq!(req.headers.get("x-env").unwrap(), "prod");
        let tags: Vec<_> = req
            .headers
            .get_all("x-tag")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(tags, vec!["a", "b"]);

        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("x-debug", "1").unwrap();
        ops.apply(&mut resp);
        assert!(resp.headers.get("x-debug").is_none());
        assert_eq!(resp.headers.get("x-env").unwrap(), "prod");
    }

    #[test]
    fn invalid_rules_are_all_reported() {
        let errors = HeaderOps::compile(&rules(
            "remove = [\"bad name\"]\nset = { \"bad name\" = \"x\", ok = \"line\\nbreak\" }",
        ))
        .unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
    }
}
