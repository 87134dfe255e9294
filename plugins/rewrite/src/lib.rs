//! `rewrite`: rewrite the upstream path (and query) with regular expressions
//! and their captures, like Caddy's `rewrite`/`uri path_regexp` and pingap's
//! `rewrite`.
//!
//! ```toml
//! [[routes.plugins]]
//! name = "rewrite"
//! config = { rules = [
//!     { regex = "^/old/(.*)$", to = "/new/$1" },
//!     { regex = "^/users/(?P<id>[0-9]+)$", to = "/api/v2/users?id=$${id}&{query}" },
//!     { regex = "^/search\\?q=(.*)$", to = "/find/$1", match_query = true },
//!     { regex = "^/v1/", to = "/v2/", continue = true },
//! ] }
//! ```
//!
//! # Matching
//!
//! Each rule's `regex` (the [`regex`] crate's syntax, without `\p{...}`
//! Unicode classes, which keeps the compiled plugin small) is matched
//! against the path, or against `path?query` when the rule sets
//! `match_query = true`.
//! The first match of the regex is replaced by `to`; text before and after
//! the match is kept, as in the host's own `rewrite` and pingap's. Anchor the
//! regex (`^...$`) to replace the whole path.
//!
//! A regex that is a literal prefix, `^/api/(.*)$` or `^/v1/`, is matched
//! by comparing strings, with the regex engine's result at a fraction of
//! its cost.
//!
//! Rules run in order and the first rule that matches wins, unless it sets
//! `continue = true`: then the following rules run on its result. Rules that
//! do not match are skipped. When no rule matches, the request goes on
//! unchanged.
//!
//! # The replacement
//!
//! `to` may use:
//! - `$1`, `${1}`: a numbered capture (`$0` is the whole match);
//! - `$name`, `${name}`: a named capture `(?P<name>...)`. A name runs as far
//!   as letters, digits and `_` go, so write `${1}x` for capture 1 then `x`;
//! - `$$`: a literal `$`;
//! - `{path}`, `{query}`: the request's original path and query (without
//!   `?`), before any rule ran.
//!
//! A capture that did not take part in the match expands to nothing. A
//! reference to a capture the regex does not define is a configuration
//! error.
//!
//! # The query
//!
//! - A rule matching the path only: if the result contains `?`, what follows
//!   replaces the query (`?` at the end clears it); otherwise the query is
//!   kept.
//! - A rule with `match_query = true` rewrites `path?query` as a whole: what
//!   follows `?` in the result is the new query, and no `?` means no query.
//! - A result that starts with `?` changes only the query and keeps the
//!   path, as in Caddy.
//!
//! A resulting path that does not start with `/` gets one. When the
//! rewritten URI differs from the original, the plugin sets the upstream
//! path to the full `path?query` (the path alone when the query is empty),
//! and counts `rewrite_applied`.
//!
//! # Invalid rules
//!
//! Regexes are compiled once per configuration, while it is deserialized:
//! Sluice hands the plugin each attachment's configuration once, not on
//! every call, and the SDK keeps what it parsed. An invalid regex, an
//! unknown capture in `to` or an unknown key makes that parse fail, and
//! the plugin refuses the configuration with serde's message, which names
//! the regex and the reason (e.g. ``rewrite rule `(`: invalid regex: ...``).
//! Sluice checks every attachment's configuration when a config is loaded,
//! so a config with a broken rule is rejected before it serves any request,
//! and a reload with one keeps the previous config. A broken rule never
//! half applies.

use regex::{Captures, Regex};
use serde::Deserialize;
use sluice_plugin_sdk::headers::with_query;
use sluice_plugin_sdk::prelude::*;

/// The plugin's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The rules, tried in order.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One compiled rewrite rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RuleSpec")]
pub struct Rule {
    regex: Regex,
    /// The rule's match without the regex engine, when its regex is a
    /// literal prefix.
    prefix: Option<Prefix>,
    to: Template,
    match_query: bool,
    continue_: bool,
}

/// A regex that is a literal prefix, matched with a string comparison.
///
/// The commonest rewrite strips or swaps a path prefix, `^/api/(.*)$` or
/// `^/v1/`. The regex engine walks such a path byte by byte and fills a
/// capture list, about 2,400 instructions a call in a Sluice worker; a
/// prefix comparison finds the same match in a few dozen.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Prefix {
    /// `^literal(.*)$`: the whole subject, when it starts with `literal`
    /// and the rest holds no line feed (which `.` does not match); capture
    /// 1 is the rest.
    WithRest(String),
    /// `^literal`: the literal itself, at the start of the subject.
    Alone(String),
}

impl Prefix {
    /// The prefix `pattern` is, if it is one: read from the pattern's
    /// syntax tree, as the regex crate parses it with its default flags,
    /// so flags, classes and escapes are never mistaken for literal text.
    fn of(pattern: &str) -> Option<Prefix> {
        use regex_syntax::hir::{Dot, Hir, HirKind, Look};
        let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
        let HirKind::Concat(parts) = hir.kind() else {
            return None;
        };
        let [start, rest @ ..] = parts.as_slice() else {
            return None;
        };
        if start.kind() != &HirKind::Look(Look::Start) {
            return None;
        }
        let (literal, rest) = match rest {
            [first, after @ ..] => match first.kind() {
                HirKind::Literal(literal) => (std::str::from_utf8(&literal.0).ok()?, after),
                _ => ("", rest),
            },
            [] => return None,
        };
        let any_line = |hir: &Hir| match hir.kind() {
            HirKind::Capture(capture) if capture.index == 1 => match capture.sub.kind() {
                HirKind::Repetition(repeat) => {
                    repeat.min == 0
                        && repeat.max.is_none()
                        && *repeat.sub == Hir::dot(Dot::AnyCharExceptLF)
                }
                _ => false,
            },
            _ => false,
        };
        match rest {
            [] => Some(Prefix::Alone(literal.to_string())),
            [capture, end] if any_line(capture) && end.kind() == &HirKind::Look(Look::End) => {
                Some(Prefix::WithRest(literal.to_string()))
            }
            _ => None,
        }
    }

    /// Where the match lies in `subject`, and what it captured.
    fn find<'s>(&self, subject: &'s str) -> Option<(std::ops::Range<usize>, Groups<'s>)> {
        match self {
            Prefix::WithRest(literal) => {
                let rest = subject.strip_prefix(literal.as_str())?;
                if rest.contains('\n') {
                    return None;
                }
                let groups = Groups::Prefix {
                    whole: subject,
                    rest: Some(rest),
                };
                Some((0..subject.len(), groups))
            }
            Prefix::Alone(literal) => {
                let whole = subject.get(..literal.len()).filter(|s| s == literal)?;
                let groups = Groups::Prefix { whole, rest: None };
                Some((0..literal.len(), groups))
            }
        }
    }
}

/// What a rule's match captured.
enum Groups<'s> {
    /// The regex engine's captures.
    Regex(Captures<'s>),
    /// A [`Prefix`] match: the whole match, and capture 1 if it has one.
    Prefix {
        whole: &'s str,
        rest: Option<&'s str>,
    },
}

impl Groups<'_> {
    /// Capture `index`'s text; empty when it did not take part.
    fn get(&self, index: usize) -> &str {
        match self {
            Groups::Regex(captures) => captures.get(index).map_or("", |m| m.as_str()),
            Groups::Prefix { whole, .. } if index == 0 => whole,
            Groups::Prefix { rest, .. } if index == 1 => rest.unwrap_or(""),
            Groups::Prefix { .. } => "",
        }
    }
}

/// A rule as written in the configuration.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    regex: String,
    to: String,
    #[serde(default)]
    match_query: bool,
    #[serde(default, rename = "continue")]
    continue_: bool,
}

impl TryFrom<RuleSpec> for Rule {
    type Error = String;

    fn try_from(spec: RuleSpec) -> Result<Self, String> {
        Ok(Rule::new(&spec.regex, &spec.to)?
            .match_query(spec.match_query)
            .continue_after(spec.continue_))
    }
}

impl Rule {
    /// Compiles a rule replacing the first match of `regex` in the path by
    /// `to`. The error names the regex and what is wrong.
    pub fn new(regex: &str, to: &str) -> Result<Self, String> {
        let compiled =
            Regex::new(regex).map_err(|e| format!("rewrite rule `{regex}`: invalid regex: {e}"))?;
        let to = Template::parse(to, &compiled)
            .map_err(|e| format!("rewrite rule `{regex}`: invalid `to`: {e}"))?;
        Ok(Rule {
            prefix: Prefix::of(regex),
            regex: compiled,
            to,
            match_query: false,
            continue_: false,
        })
    }

    /// Matches `path?query` instead of the path alone.
    pub fn match_query(mut self, yes: bool) -> Self {
        self.match_query = yes;
        self
    }

    /// Runs the following rules after this one matches.
    pub fn continue_after(mut self, yes: bool) -> Self {
        self.continue_ = yes;
        self
    }

    /// `subject` with the first match replaced, or `None` without a match.
    fn apply(&self, subject: &str, original: &RequestView) -> Option<String> {
        let (whole, groups) = match &self.prefix {
            Some(prefix) => prefix.find(subject)?,
            None => {
                let captures = self.regex.captures(subject)?;
                let whole = captures.get(0).expect("group 0 always matches").range();
                (whole, Groups::Regex(captures))
            }
        };
        let mut out = String::with_capacity(subject.len() + 16);
        out.push_str(&subject[..whole.start]);
        self.to.expand(&groups, original, &mut out);
        out.push_str(&subject[whole.end..]);
        Some(out)
    }
}

/// A parsed replacement.
#[derive(Debug, Clone, PartialEq)]
struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(String),
    /// A capture group, by index (names are resolved when parsing).
    Group(usize),
    /// The original path.
    Path,
    /// The original query, without `?`.
    Query,
}

impl Template {
    fn parse(to: &str, regex: &Regex) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = to;
        while let Some(c) = rest.chars().next() {
            match c {
                '$' => {
                    let after = &rest[1..];
                    let (group, consumed) = match after.chars().next() {
                        Some('$') => {
                            literal.push('$');
                            rest = &after[1..];
                            continue;
                        }
                        Some('{') => {
                            let close = after
                                .find('}')
                                .ok_or_else(|| format!("unclosed `${{` in `{to}`"))?;
                            (&after[1..close], close + 1)
                        }
                        Some(c) if c.is_ascii_digit() => {
                            let end = after
                                .find(|c: char| !c.is_ascii_digit())
                                .unwrap_or(after.len());
                            (&after[..end], end)
                        }
                        Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                            let end = after
                                .find(|c: char| c != '_' && !c.is_ascii_alphanumeric())
                                .unwrap_or(after.len());
                            (&after[..end], end)
                        }
                        // A `$` not followed by a reference is literal.
                        _ => {
                            literal.push('$');
                            rest = after;
                            continue;
                        }
                    };
                    let index = resolve_group(group, regex)?;
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Group(index));
                    rest = &after[consumed..];
                }
                '{' if rest.starts_with("{path}") || rest.starts_with("{query}") => {
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    let (piece, len) = if rest.starts_with("{path}") {
                        (Piece::Path, "{path}".len())
                    } else {
                        (Piece::Query, "{query}".len())
                    };
                    pieces.push(piece);
                    rest = &rest[len..];
                }
                c => {
                    literal.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Template(pieces))
    }

    fn expand(&self, groups: &Groups<'_>, original: &RequestView, out: &mut String) {
        for piece in &self.0 {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Group(index) => out.push_str(groups.get(*index)),
                Piece::Path => out.push_str(original.path()),
                Piece::Query => out.push_str(original.query().unwrap_or("")),
            }
        }
    }
}

/// The index of capture `group` (a number or a name) in `regex`.
fn resolve_group(group: &str, regex: &Regex) -> Result<usize, String> {
    if group.is_empty() {
        return Err("empty capture reference `${}`".into());
    }
    if group.bytes().all(|b| b.is_ascii_digit()) {
        let index: usize = group
            .parse()
            .map_err(|_| format!("capture `${group}` is out of range"))?;
        if index >= regex.captures_len() {
            return Err(format!(
                "`${group}` refers to capture {index}, but the regex has {} (write `${{1}}0` for capture 1 then `0`)",
                regex.captures_len() - 1
            ));
        }
        return Ok(index);
    }
    if !group.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
        return Err(format!("`${{{group}}}` is not a capture number or name"));
    }
    regex
        .capture_names()
        .position(|name| name == Some(group))
        .ok_or_else(|| {
            format!(
                "`${group}` refers to a capture the regex does not name (use `(?P<{group}>...)`)"
            )
        })
}

/// The plugin.
pub struct Rewrite;

impl Plugin for Rewrite {
    type Config = Config;

    fn on_request(config: &Config, request: &RequestView) -> RequestAction {
        let (path, query) = rewrite(&config.rules, request);
        // Neither path holds `?`, and both queries are `None` when empty.
        let original_query = request.query().filter(|q| !q.is_empty());
        if path == request.path() && query.as_deref() == original_query {
            return RequestChanges::new().into();
        }
        host::counter_add("rewrite_applied", 1);
        RequestChanges::new()
            .path(with_query(&path, query.as_deref()))
            .into()
    }
}

sluice_plugin_sdk::export!(Rewrite => on_request);

/// Runs `rules` on the request's path and query; returns the new ones.
fn rewrite(rules: &[Rule], request: &RequestView) -> (String, Option<String>) {
    let mut path = request.path().to_string();
    let mut query = request.query().map(str::to_string);
    for rule in rules {
        let result = if rule.match_query {
            rule.apply(&with_query(&path, query.as_deref()), request)
        } else {
            rule.apply(&path, request)
        };
        let Some(result) = result else {
            continue;
        };
        match result.split_once('?') {
            Some((new_path, new_query)) => {
                if !new_path.is_empty() {
                    path = new_path.to_string();
                }
                query = Some(new_query.to_string());
            }
            None => {
                path = result;
                if rule.match_query {
                    query = None;
                }
            }
        }
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        if !rule.continue_ {
            break;
        }
    }
    (path, query.filter(|q| !q.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::testing::{clear, expect_continue, recorded, request};

    fn rule(regex: &str, to: &str) -> Rule {
        Rule::new(regex, to).unwrap()
    }

    fn config(rules: Vec<Rule>) -> Config {
        Config { rules }
    }

    /// The upstream path the plugin sets for `uri`, or `None` for unchanged.
    fn run(config: &Config, uri: &str) -> Option<String> {
        let changes = expect_continue(Rewrite::on_request(config, &request("GET", uri).build()));
        assert!(changes.headers.is_empty());
        assert_eq!(changes.placement, None);
        assert_eq!(changes.routing_key, None);
        changes.path
    }

    #[test]
    fn numbered_capture_keeps_the_query() {
        let config = config(vec![rule("^/old/(.*)$", "/new/$1")]);
        assert_eq!(run(&config, "/old/a/b").as_deref(), Some("/new/a/b"));
        assert_eq!(
            run(&config, "/old/a?x=1&y=2").as_deref(),
            Some("/new/a?x=1&y=2")
        );
        assert_eq!(run(&config, "/other/a?x=1"), None);
    }

    #[test]
    fn named_captures_in_both_forms() {
        let config = config(vec![rule(
            r"^/users/(?P<id>[0-9]+)/(?<tab>\w+)$",
            "/api/u/$id/${tab}_v${1}0",
        )]);
        assert_eq!(
            run(&config, "/users/42/posts").as_deref(),
            Some("/api/u/42/posts_v420")
        );
    }

    #[test]
    fn dollar_escapes_and_unmatched_groups() {
        let config = config(vec![rule("^/p(/x)?/(.*)$", "/$$cost$2$1$-")]);
        assert_eq!(run(&config, "/p/abc").as_deref(), Some("/$costabc$-"));
        assert_eq!(run(&config, "/p/x/abc").as_deref(), Some("/$costabc/x$-"));
    }

    #[test]
    fn to_with_a_query_replaces_it_and_placeholders_see_the_original() {
        let config = config(vec![rule(
            "^/users/([0-9]+)$",
            "/api/users?id=$1&from={path}&{query}",
        )]);
        assert_eq!(
            run(&config, "/users/7?lang=en").as_deref(),
            Some("/api/users?id=7&from=/users/7&lang=en")
        );
        // A trailing `?` clears the query.
        let clear_query = self::config(vec![rule("^/a$", "/b?")]);
        assert_eq!(run(&clear_query, "/a?secret=1").as_deref(), Some("/b"));
    }

    #[test]
    fn a_query_only_result_keeps_the_path() {
        let config = config(vec![rule("^.*$", "?format=json&{query}")]);
        assert_eq!(
            run(&config, "/report?day=1").as_deref(),
            Some("/report?format=json&day=1")
        );
    }

    #[test]
    fn unanchored_regex_replaces_the_first_match_only() {
        let config = config(vec![rule("/v1/", "/v2/")]);
        assert_eq!(
            run(&config, "/api/v1/users/v1/x").as_deref(),
            Some("/api/v2/users/v1/x")
        );
    }

    #[test]
    fn first_matching_rule_wins() {
        let config = config(vec![
            rule("^/a/(.*)$", "/first/$1"),
            rule("^/a/b$", "/second"),
            rule("^/first/(.*)$", "/third/$1"),
        ]);
        assert_eq!(run(&config, "/a/b").as_deref(), Some("/first/b"));
        // A rule that does not match is skipped.
        assert_eq!(run(&config, "/first/z").as_deref(), Some("/third/z"));
    }

    #[test]
    fn continue_runs_later_rules_on_the_result() {
        let config = config(vec![
            rule("^/v1/", "/v2/").continue_after(true),
            rule("^/nomatch$", "/never"),
            rule("^/v2/(.*)$", "/api/$1?seen={path}"),
            rule("^/api/(.*)$", "/not-reached"),
        ]);
        assert_eq!(
            run(&config, "/v1/users").as_deref(),
            Some("/api/users?seen=/v1/users")
        );
    }

    #[test]
    fn match_query_rewrites_path_and_query_as_a_whole() {
        let config = config(vec![
            rule(r"^/search\?q=([^&]*)$", "/find/$1").match_query(true),
            rule(r"^/keep\?(.*)$", "/kept?$1&x=1").match_query(true),
        ]);
        // No `?` in the result: the query was consumed.
        assert_eq!(
            run(&config, "/search?q=rust").as_deref(),
            Some("/find/rust")
        );
        assert_eq!(run(&config, "/search?q=rust&page=2"), None);
        assert_eq!(run(&config, "/keep?a=1").as_deref(), Some("/kept?a=1&x=1"));
        // Without `match_query`, the query is not part of the subject.
        let path_only = self::config(vec![rule(r"^/search\?q=(.*)$", "/find/$1")]);
        assert_eq!(run(&path_only, "/search?q=rust"), None);
    }

    #[test]
    fn results_get_a_leading_slash() {
        let config = config(vec![rule("^/api", "")]);
        assert_eq!(run(&config, "/api/users").as_deref(), Some("/users"));
        assert_eq!(run(&config, "/api").as_deref(), Some("/"));
    }

    #[test]
    fn unchanged_uri_sets_nothing_and_counts_only_rewrites() {
        clear();
        let config = config(vec![rule("^/same$", "/same")]);
        assert_eq!(run(&config, "/same?x=1"), None);
        assert!(recorded().counters.is_empty());
        let config = self::config(vec![rule("^/a$", "/b")]);
        run(&config, "/a");
        assert_eq!(
            recorded().counters,
            vec![("rewrite_applied".to_string(), 1)]
        );
        assert!(recorded().logs.is_empty());
    }

    #[test]
    fn config_parses_from_toml_tables() {
        let config: Config = sluice_plugin_sdk::testing::config(
            r#"rules = [{"regex": "^/old/(.*)$", "to": "/new/$1"}, {"regex": "^/q", "to": "/r", "match_query": true, "continue": true}]"#,
        );
        assert_eq!(config.rules.len(), 2);
        assert!(!config.rules[0].match_query && !config.rules[0].continue_);
        assert!(config.rules[1].match_query && config.rules[1].continue_);
        assert_eq!(run(&config, "/old/x").as_deref(), Some("/new/x"));
        assert!(Config::default().rules.is_empty());
    }

    fn parse_error(json: &str) -> String {
        serde_json::from_str::<Config>(json)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn invalid_rules_fail_the_configuration_with_a_clear_error() {
        let error = parse_error(r#"{"rules": [{"regex": "^/(unclosed", "to": "/x"}]}"#);
        assert!(
            error.contains("rewrite rule `^/(unclosed`: invalid regex"),
            "{error}"
        );
        let error = parse_error(r#"{"rules": [{"regex": "^/(a)$", "to": "/$2"}]}"#);
        assert!(
            error.contains("refers to capture 2, but the regex has 1"),
            "{error}"
        );
        let error = parse_error(r#"{"rules": [{"regex": "^/(a)$", "to": "/$name"}]}"#);
        assert!(error.contains("does not name"), "{error}");
        let error = parse_error(r#"{"rules": [{"regex": "^/(a)$", "to": "/${1"}]}"#);
        assert!(error.contains("unclosed"), "{error}");
        let error = parse_error(r#"{"rules": [{"regex": "^/", "to": "/", "contnue": true}]}"#);
        assert!(error.contains("unknown field `contnue`"), "{error}");
        let error = parse_error(r#"{"rule": []}"#);
        assert!(error.contains("unknown field `rule`"), "{error}");
    }

    #[test]
    fn perl_classes_and_case_folding_are_unicode_aware() {
        let config: Config = serde_json::from_str(
            r#"{"rules": [{"regex": "^/(?i)caf\u00c9/(\\w+)/(\\d+)$", "to": "/$1-$2"}]}"#,
        )
        .unwrap();
        assert_eq!(run(&config, "/café/naïve/٣").as_deref(), Some("/naïve-٣"));
    }

    #[test]
    fn literal_prefixes_are_recognised_from_the_syntax_tree() {
        let with_rest = |literal: &str| Some(Prefix::WithRest(literal.to_string()));
        assert_eq!(Prefix::of("^/acme/(.*)$"), with_rest("/acme/"));
        assert_eq!(Prefix::of(r"^/a\.b/(?P<rest>.*)$"), with_rest("/a.b/"));
        assert_eq!(Prefix::of("^(.*)$"), with_rest(""));
        assert_eq!(Prefix::of("^/v1/"), Some(Prefix::Alone("/v1/".into())));
        for not_a_prefix in [
            "/acme/(.*)$",
            "^/acme/(.*)",
            "^/acme/(.+)$",
            "^/acme/(.*)/x$",
            "^/acme/(?:.*)$",
            "(?i)^/acme/(.*)$",
            "(?s)^/acme/(.*)$",
            "(?m)^/acme/(.*)$",
            "^/a(/x)?/(.*)$",
            "^/a|^/b",
            "^",
        ] {
            assert_eq!(Prefix::of(not_a_prefix), None, "{not_a_prefix}");
        }
    }

    #[test]
    fn a_prefix_rule_rewrites_as_its_regex_does() {
        let subjects = [
            "/acme/hello",
            "/acme/",
            "/acme",
            "/acmex",
            "",
            "/",
            "/acme/a\nb",
            "/acme/\n",
            "/v1/users",
            "/v1",
            "/x/acme/y",
            "/é/ü?q=1",
        ];
        let rules = [
            ("^/acme/(.*)$", "/new/$1|$0"),
            ("^/v1/", "/v2/[$0]"),
            ("^(.*)$", "/all$1"),
            ("^/é/(?P<rest>.*)$", "/e/${rest}"),
        ];
        let view = request("GET", "/orig?x=1").build();
        for (regex, to) in rules {
            let fast = rule(regex, to);
            assert!(fast.prefix.is_some(), "{regex}");
            let engine = Rule {
                prefix: None,
                ..fast.clone()
            };
            for subject in subjects {
                assert_eq!(
                    fast.apply(subject, &view),
                    engine.apply(subject, &view),
                    "{regex} on {subject:?}"
                );
            }
        }
    }

    #[test]
    fn an_invalid_configuration_is_refused_through_the_sdk() {
        use sluice_plugin_sdk::testing::{configure, on_request};
        let error = configure::<Rewrite>(r#"{"rules": [{"regex": "(", "to": "/"}]}"#).unwrap_err();
        assert!(error.contains("rewrite rule `(`: invalid regex"), "{error}");

        // A valid configuration through the same steps.
        configure::<Rewrite>(r#"{"rules": [{"regex": "^/a$", "to": "/b"}]}"#).unwrap();
        let changes = expect_continue(on_request::<Rewrite>(&request("GET", "/a").build()));
        assert_eq!(changes.path.as_deref(), Some("/b"));
    }
}
