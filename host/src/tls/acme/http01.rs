//! The answers to pending HTTP-01 challenges.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The path under which a CA asks for HTTP-01 answers, followed by the token.
pub const CHALLENGE_PATH_PREFIX: &str = "/.well-known/acme-challenge/";

/// The key authorizations of pending HTTP-01 challenges, by token. Cheap to
/// clone; every clone sees the same map. The HTTP listener answers
/// `GET /.well-known/acme-challenge/{token}` with [`Http01Responses::response`].
#[derive(Debug, Clone, Default)]
pub struct Http01Responses {
    tokens: Arc<RwLock<HashMap<String, String>>>,
}

impl Http01Responses {
    /// The body to answer for `token`, while its challenge is pending.
    pub fn response(&self, token: &str) -> Option<String> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    /// The answer to a request, when it asks for a pending challenge: a
    /// `GET` of its path over plain HTTP, which is where the CA validates.
    pub fn answer_for(&self, method: &http::Method, path: &str, over_tls: bool) -> Option<String> {
        if method != http::Method::GET || over_tls {
            return None;
        }
        self.response_for_path(path)
    }

    /// The body to answer for a request `path`, if it is a challenge path
    /// whose challenge is pending.
    pub fn response_for_path(&self, path: &str) -> Option<String> {
        self.response(path.strip_prefix(CHALLENGE_PATH_PREFIX)?)
    }

    pub(super) fn insert(&self, token: String, key_authorization: String) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, key_authorization);
    }

    pub(super) fn remove(&self, token: &str) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_pending_tokens_only() {
        let responses = Http01Responses::default();
        let listener_side = responses.clone();
        responses.insert("tok".into(), "tok.thumb".into());
        assert_eq!(listener_side.response("tok").as_deref(), Some("tok.thumb"));
        assert_eq!(
            listener_side
                .response_for_path("/.well-known/acme-challenge/tok")
                .as_deref(),
            Some("tok.thumb")
        );
        assert_eq!(listener_side.response_for_path("/tok"), None);
        responses.remove("tok");
        assert_eq!(listener_side.response("tok"), None);
    }
}
