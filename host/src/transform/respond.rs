//! A route's `respond`: a fixed status, body and headers, with the request's
//! host, path and query filled into placeholders (`Location:
//! https://{host}{uri}` for a redirect, say).

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue};

use crate::config::DirectResponse;

/// A compiled `respond`.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: u16,
    body: String,
    headers: Vec<(HeaderName, String)>,
}

/// What a request brings to the placeholders.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// The client's host, as sent (port included).
    pub host: &'a str,
    /// The path.
    pub path: &'a str,
    /// The query, without `?`.
    pub query: Option<&'a str>,
}

impl Answer {
    /// Checks the status and headers; errors name the key and the reason.
    pub fn compile(respond: &DirectResponse) -> Result<Self, Vec<(String, String)>> {
        let mut errors = Vec::new();
        if !(100..=599).contains(&respond.status) {
            errors.push((
                "status".to_string(),
                "must be a status between 100 and 599".to_string(),
            ));
        }
        let headers = compile_headers(&respond.headers, &mut errors);
        if errors.is_empty() {
            Ok(Self {
                status: respond.status,
                body: respond.body.clone(),
                headers,
            })
        } else {
            Err(errors)
        }
    }

    /// The body for `request`.
    pub fn body(&self, request: RequestParts<'_>) -> String {
        fill(&self.body, request)
    }

    /// The headers for `request`; a filled-in value that is no longer a
    /// valid header value (a control character in the path) is left out.
    /// Without a `Content-Type` and with a body, one is chosen as Caddy
    /// does: JSON for a body that is a JSON object or array, plain text
    /// otherwise.
    pub fn headers(&self, request: RequestParts<'_>, body: &str) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers: Vec<(HeaderName, HeaderValue)> = self
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    name.clone(),
                    HeaderValue::from_str(&fill(value, request)).ok()?,
                ))
            })
            .collect();
        if !body.is_empty()
            && !headers
                .iter()
                .any(|(name, _)| name == http::header::CONTENT_TYPE)
        {
            headers.push((
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(body)),
            ));
        }
        headers
    }
}

fn compile_headers(
    headers: &BTreeMap<String, String>,
    errors: &mut Vec<(String, String)>,
) -> Vec<(HeaderName, String)> {
    let mut compiled = Vec::new();
    for (name, value) in headers {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) if HeaderValue::from_str(value).is_ok() => {
                compiled.push((header, value.clone()))
            }
            Ok(_) => errors.push((format!("headers.{name}"), "not a valid header value".into())),
            Err(_) => errors.push((format!("headers.{name}"), "not a valid header name".into())),
        }
    }
    compiled
}

fn content_type(body: &str) -> &'static str {
    let trimmed = body.trim();
    let bracketed = (trimmed.starts_with('{') && trimmed.ends_with('}'))
        || (trimmed.starts_with('[') && trimmed.ends_with(']'));
    if trimmed.len() > 2 && bracketed && serde_json::from_str::<serde_json::Value>(trimmed).is_ok()
    {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// Replaces `{host}` (without the port), `{hostport}`, `{path}`, `{query}`
/// and `{uri}`; other braces are kept.
fn fill(template: &str, request: RequestParts<'_>) -> String {
    if !template.contains('{') {
        return template.to_string();
    }
    let query = request.query.unwrap_or("");
    let uri = match request.query {
        Some(query) => format!("{}?{query}", request.path),
        None => request.path.to_string(),
    };
    let host = match request.host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => request.host,
    };
    template
        .replace("{hostport}", request.host)
        .replace("{host}", host)
        .replace("{path}", request.path)
        .replace("{query}", query)
        .replace("{uri}", &uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(
        status: u16,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, Vec<(String, String)>> {
        Answer::compile(&DirectResponse {
            status,
            body: body.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    const REQUEST: RequestParts<'static> = RequestParts {
        host: "shop.test:8080",
        path: "/old/a",
        query: Some("x=1"),
    };

    #[test]
    fn fills_placeholders_in_body_and_headers() {
        let answer = answer(
            301,
            "moved to {path} on {hostport}",
            &[("Location", "https://{host}/new{uri}")],
        )
        .unwrap();
        let body = answer.body(REQUEST);
        assert_eq!(body, "moved to /old/a on shop.test:8080");
        let headers = answer.headers(REQUEST, &body);
        assert_eq!(headers[0].1, "https://shop.test/new/old/a?x=1");
        assert_eq!(headers[1].1, "text/plain; charset=utf-8");
    }

    #[test]
    fn picks_a_content_type_like_caddy() {
        let json = answer(200, r#"{"ok": true}"#, &[]).unwrap();
        let headers = json.headers(REQUEST, &json.body(REQUEST));
        assert_eq!(headers[0].1, "application/json");
        let empty = answer(204, "", &[]).unwrap();
        assert!(empty.headers(REQUEST, "").is_empty());
        let typed = answer(200, "<p>", &[("content-type", "text/html")]).unwrap();
        let headers = typed.headers(REQUEST, "<p>");
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].1, "text/html");
        assert_eq!(content_type("{not json}"), "text/plain; charset=utf-8");
    }

    #[test]
    fn rejects_bad_statuses_and_headers() {
        let errors = answer(42, "", &[("bad name", "x"), ("X-Ok", "bad\nvalue")]).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["status", "headers.X-Ok", "headers.bad name"]);
    }
}
