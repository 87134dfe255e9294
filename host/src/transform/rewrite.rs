//! Path rewrites: strip a prefix, replace a prefix, replace a text, or a
//! regex with captures.
//! Only the path changes; the query string is kept.

use regex::Regex;

use crate::config::Rewrite;

/// A route's rewrites, applied in order, each to the path the one before
/// left.
#[derive(Debug, Clone)]
pub struct PathRewrites(pub Vec<PathRewrite>);

impl PathRewrites {
    /// The rewritten path, or `None` when no rewrite applies.
    pub fn apply(&self, path: &str) -> Option<String> {
        let mut rewritten: Option<String> = None;
        for step in &self.0 {
            if let Some(next) = step.apply(rewritten.as_deref().unwrap_or(path)) {
                rewritten = Some(next);
            }
        }
        rewritten
    }
}

/// A compiled path rewrite.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// Remove this prefix.
    StripPrefix(String),
    /// Replace `from` with `to` at the start of the path.
    ReplacePrefix {
        /// The prefix to replace.
        from: String,
        /// Its replacement.
        to: String,
    },
    /// Replace occurrences of `find` with `to`: the first `limit`, or all.
    Replace {
        /// The text replaced.
        find: String,
        /// Its replacement.
        to: String,
        /// How many occurrences, from the left; `None` for all.
        limit: Option<usize>,
    },
    /// Replace the first match of `regex` with `to` (which may use `$1`, `${name}`).
    Regex {
        /// The pattern.
        regex: Regex,
        /// The replacement.
        to: String,
    },
}

impl PathRewrite {
    /// Compiles a rewrite; the error names the offending key.
    pub fn compile(rewrite: &Rewrite) -> Result<Self, (&'static str, String)> {
        let kinds = [
            rewrite.strip_prefix.is_some(),
            rewrite.prefix.is_some(),
            rewrite.regex.is_some(),
            rewrite.replace.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err((
                "strip_prefix",
                "set exactly one of `strip_prefix`, `prefix`, `regex` or `replace`".into(),
            ));
        }
        if rewrite.limit.is_some() && rewrite.replace.is_none() {
            return Err(("limit", "`limit` goes with `replace`".into()));
        }
        let to = || {
            rewrite.to.clone().ok_or((
                "to",
                "a `prefix`, `regex` or `replace` rewrite needs `to`".to_string(),
            ))
        };
        if let Some(prefix) = &rewrite.strip_prefix {
            if rewrite.to.is_some() {
                return Err((
                    "to",
                    "`strip_prefix` takes no `to`; use `prefix` to replace a prefix".into(),
                ));
            }
            return Ok(Self::StripPrefix(prefix.clone()));
        }
        if let Some(from) = &rewrite.prefix {
            return Ok(Self::ReplacePrefix {
                from: from.clone(),
                to: to()?,
            });
        }
        if let Some(find) = &rewrite.replace {
            if find.is_empty() {
                return Err(("replace", "must not be empty".into()));
            }
            if rewrite.limit == Some(0) {
                return Err(("limit", "must be at least 1".into()));
            }
            return Ok(Self::Replace {
                find: find.clone(),
                to: to()?,
                limit: rewrite.limit,
            });
        }
        let pattern = rewrite.regex.as_deref().unwrap_or_default();
        let regex = Regex::new(pattern).map_err(|e| ("regex", format!("invalid regex: {e}")))?;
        Ok(Self::Regex { regex, to: to()? })
    }

    /// The rewritten path, or `None` when this rewrite does not apply.
    pub fn apply(&self, path: &str) -> Option<String> {
        let rewritten = match self {
            Self::StripPrefix(prefix) => path.strip_prefix(prefix.as_str())?.to_string(),
            Self::ReplacePrefix { from, to } => {
                format!("{to}{}", path.strip_prefix(from.as_str())?)
            }
            Self::Replace { find, to, limit } => {
                if !path.contains(find.as_str()) {
                    return None;
                }
                match limit {
                    Some(limit) => path.replacen(find.as_str(), to, *limit),
                    None => path.replace(find.as_str(), to),
                }
            }
            Self::Regex { regex, to } => {
                if !regex.is_match(path) {
                    return None;
                }
                regex.replace(path, to.as_str()).into_owned()
            }
        };
        Some(if rewritten.starts_with('/') {
            rewritten
        } else {
            format!("/{rewritten}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(text: &str) -> PathRewrite {
        PathRewrite::compile(&crate::config::fragment(text)).unwrap()
    }

    #[test]
    fn a_chain_applies_each_rewrite_to_the_path_the_one_before_left() {
        let chain = PathRewrites(vec![
            rewrite("strip_prefix = \"/api\""),
            rewrite("regex = \"^/v([0-9]+)/(.*)$\"\nto = \"/version/$1/$2\""),
        ]);
        assert_eq!(
            chain.apply("/api/v2/users").as_deref(),
            Some("/version/2/users")
        );
        assert_eq!(chain.apply("/v3/x").as_deref(), Some("/version/3/x"));
        assert_eq!(chain.apply("/api/other").as_deref(), Some("/other"));
        assert_eq!(chain.apply("/other"), None);
    }

    #[test]
    fn replaces_every_occurrence_or_the_first_few() {
        let all = rewrite("replace = \"/old/\"\nto = \"/new/\"");
        assert_eq!(all.apply("/old/a/old/b").as_deref(), Some("/new/a/new/b"));
        assert_eq!(all.apply("/other"), None);
        let first = rewrite("replace = \"/old/\"\nto = \"/new/\"\nlimit = 1");
        assert_eq!(first.apply("/old/a/old/b").as_deref(), Some("/new/a/old/b"));
        let refused = PathRewrite::compile(&crate::config::fragment(
            "regex = \"a\"\nto = \"b\"\nlimit = 1",
        ));
        assert!(refused.is_err());
    }

    #[test]
    fn strips_prefixes() {
        let r = rewrite("strip_prefix = \"/api\"");
        assert_eq!(r.apply("/api/users").as_deref(), Some("/users"));
        assert_eq!(r.apply("/api").as_deref(), Some("/"));
        assert_eq!(r.apply("/other"), None);
    }

    #[test]
    fn replaces_prefixes() {
        let r = rewrite("prefix = \"/old\"\nto = \"/new/v2\"");
        assert_eq!(r.apply("/old/x").as_deref(), Some("/new/v2/x"));
    }

    #[test]
    fn regex_with_captures() {
        let r = rewrite("regex = \"^(.*)$\"\nto = \"/ipfs/bafy$1\"");
        assert_eq!(
            r.apply("/docs/a.txt").as_deref(),
            Some("/ipfs/bafy/docs/a.txt")
        );
        let r = rewrite("regex = \"^/users/(?P<id>[0-9]+)$\"\nto = \"/v2/people/${id}\"");
        assert_eq!(r.apply("/users/42").as_deref(), Some("/v2/people/42"));
        assert_eq!(r.apply("/users/x"), None);
    }

    #[test]
    fn invalid_rewrites_name_the_key() {
        let bad = |text: &str| {
            PathRewrite::compile(&crate::config::fragment(text))
                .unwrap_err()
                .0
        };
        assert_eq!(bad("regex = \"(\"\nto = \"/\""), "regex");
        assert_eq!(bad("prefix = \"/a\""), "to");
        assert_eq!(
            bad("prefix = \"/a\"\nstrip_prefix = \"/b\""),
            "strip_prefix"
        );
    }
}
