//! Caddy placeholders in text, turned into what Sluice understands.
//!
//! Environment placeholders (`{$VAR}`, `{$VAR:default}`, `{env.VAR}`) become
//! Sluice's config interpolation (`${VAR}`, `${VAR:-default}`), so the
//! imported config keeps reading the variables. Request placeholders
//! (`{host}`, `{path}`, ...) are kept or renamed for the consumer that
//! understands them (the `respond` route table, the `headers` and `rewrite`
//! plugins), and anything else is reported.

/// The request placeholders a consumer of the text understands, by the
/// name it uses for them.
pub const RESPOND_PLACEHOLDERS: &[&str] = &["host", "hostport", "path", "query", "uri"];

/// The placeholders the `headers` plugin understands in request rules.
pub const PLUGIN_REQUEST_PLACEHOLDERS: &[&str] = &[
    "host",
    "method",
    "path",
    "query",
    "uri",
    "client_ip",
    "request_id",
];

/// The placeholders the `headers` plugin understands in response rules.
pub const PLUGIN_RESPONSE_PLACEHOLDERS: &[&str] =
    &["host", "method", "path", "request_id", "upstream", "status"];

/// Text converted from a Caddyfile token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// The text for the Sluice config (before its own interpolation).
    pub text: String,
    /// Request placeholders it still holds, by their Sluice name.
    pub request_placeholders: Vec<String>,
}

/// Converts `text`: environment placeholders to `${...}`, literal `$` to
/// `$$`, and request placeholders to their short names (`{http.request.host}`
/// → `{host}`). A placeholder with no Sluice counterpart is an error naming it.
pub fn convert(text: &str) -> Result<Converted, String> {
    let mut out = String::with_capacity(text.len());
    let mut request_placeholders = Vec::new();
    let mut rest = text;
    loop {
        let Some(open) = rest.find(['{', '$']) else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..open]);
        if rest[open..].starts_with('$') {
            out.push_str("$$");
            rest = &rest[open + 1..];
            continue;
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            break;
        };
        let inner = &after[..close];
        rest = &after[close + 1..];
        if let Some(variable) = inner.strip_prefix('$') {
            let (name, default) = match variable.split_once(':') {
                Some((name, default)) => (name, Some(default)),
                None => (variable, None),
            };
            out.push_str(&interpolation(name, default)?);
        } else if let Some(name) = inner.strip_prefix("env.") {
            out.push_str(&interpolation(name, None)?);
        } else if inner.is_empty()
            || !inner
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-[]".contains(c))
        {
            // Not a placeholder: JSON bodies and the like.
            out.push('{');
            out.push_str(inner);
            out.push('}');
        } else {
            let name = request_placeholder(inner)
                .ok_or_else(|| format!("the placeholder {{{inner}}} has no Sluice equivalent"))?;
            out.push('{');
            out.push_str(name);
            out.push('}');
            request_placeholders.push(name.to_string());
        }
    }
    Ok(Converted {
        text: out,
        request_placeholders,
    })
}

/// Converts `text`, which must not hold request placeholders (addresses,
/// file names, tokens).
pub fn convert_plain(text: &str) -> Result<String, String> {
    let converted = convert(text)?;
    match converted.request_placeholders.first() {
        None => Ok(converted.text),
        Some(name) => Err(format!(
            "the request placeholder {{{name}}} cannot be used here"
        )),
    }
}

/// Converts `text` whose request placeholders must all be among `allowed`.
pub fn convert_with(text: &str, allowed: &[&str]) -> Result<Converted, String> {
    let converted = convert(text)?;
    match converted
        .request_placeholders
        .iter()
        .find(|name| !allowed.contains(&name.as_str()))
    {
        None => Ok(converted),
        Some(name) => Err(format!("the placeholder {{{name}}} is not available here")),
    }
}

/// The variable an environment placeholder names, when `text` is exactly
/// one (`{env.CF_API_TOKEN}` or `{$CF_API_TOKEN}`).
pub fn environment_variable(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    let name = inner
        .strip_prefix("env.")
        .or_else(|| inner.strip_prefix('$'))?;
    valid_variable(name).then_some(name)
}

fn interpolation(name: &str, default: Option<&str>) -> Result<String, String> {
    if !valid_variable(name) {
        return Err(format!(
            "{name:?} is not a variable name Sluice can read (letters, digits and _)"
        ));
    }
    Ok(match default {
        // Caddy gives an unset variable an empty value; Sluice's `${VAR}`
        // refuses to load without it, which is the safer reading of a
        // config that needs it. A default keeps Caddy's behaviour.
        None => format!("${{{name}}}"),
        Some(default) => format!("${{{name}:-{}}}", default.replace('$', "$$")),
    })
}

fn valid_variable(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Caddy's request placeholders that have a Sluice counterpart, by their
/// short and long names.
fn request_placeholder(inner: &str) -> Option<&'static str> {
    Some(match inner {
        "host" | "http.request.host" => "host",
        "hostport" | "http.request.hostport" => "hostport",
        "path" | "http.request.uri.path" => "path",
        "query" | "http.request.uri.query" => "query",
        "uri" | "http.request.uri" => "uri",
        "method" | "http.request.method" => "method",
        "remote_host" | "http.request.remote.host" | "client_ip" | "http.vars.client_ip" => {
            "client_ip"
        }
        "upstream_hostport" | "http.reverse_proxy.upstream.hostport" => "upstream",
        "http.request.uuid" => "request_id",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_placeholders_become_interpolation() {
        assert_eq!(
            convert_plain("{$BACKEND:localhost:9000}").unwrap(),
            "${BACKEND:-localhost:9000}"
        );
        assert_eq!(convert_plain("api.{$DOMAIN}").unwrap(), "api.${DOMAIN}");
        assert_eq!(
            convert_plain("{env.CF_API_TOKEN}").unwrap(),
            "${CF_API_TOKEN}"
        );
    }

    #[test]
    fn literal_dollars_are_escaped() {
        assert_eq!(convert_plain("cost $5").unwrap(), "cost $$5");
        assert_eq!(convert_plain("{$A:x$y}").unwrap(), "${A:-x$$y}");
    }

    #[test]
    fn request_placeholders_get_their_short_names() {
        let converted = convert("{http.request.uri.path}?{query}").unwrap();
        assert_eq!(converted.text, "{path}?{query}");
        assert_eq!(converted.request_placeholders, ["path", "query"]);
        assert_eq!(
            convert("{http.request.hostport}").unwrap().text,
            "{hostport}"
        );
        assert!(convert_plain("{path}").is_err());
        assert!(convert_with("{remote_host}", RESPOND_PLACEHOLDERS).is_err());
        assert_eq!(
            convert_with("{remote_host}", PLUGIN_REQUEST_PLACEHOLDERS)
                .unwrap()
                .text,
            "{client_ip}"
        );
    }

    #[test]
    fn unknown_placeholders_are_errors_and_json_is_text() {
        let error = convert("{http.request.tls.cipher_suite}").unwrap_err();
        assert!(error.contains("http.request.tls.cipher_suite"), "{error}");
        assert_eq!(
            convert_plain(r#"{ "ok": true }"#).unwrap(),
            r#"{ "ok": true }"#
        );
        assert_eq!(convert_plain("{}").unwrap(), "{}");
        assert_eq!(convert_plain(r#"{"ok":true}"#).unwrap(), r#"{"ok":true}"#);
    }

    #[test]
    fn finds_the_variable_of_a_lone_placeholder() {
        assert_eq!(
            environment_variable("{env.CF_API_TOKEN}"),
            Some("CF_API_TOKEN")
        );
        assert_eq!(
            environment_variable("{$CF_API_TOKEN}"),
            Some("CF_API_TOKEN")
        );
        assert_eq!(environment_variable("abc123"), None);
        assert_eq!(environment_variable("{env.A-B}"), None);
    }
}
