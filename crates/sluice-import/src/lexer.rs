//! Splits a Caddyfile into tokens, the way Caddy does.
//!
//! Tokens are separated by whitespace; a newline ends a directive, so each
//! token keeps its line. `"double quotes"` (with `\"` escapes) and
//! `` `backticks` `` (raw) make one token of text with spaces, and may span
//! lines. `#` starts a comment when it begins a token. Environment
//! placeholders (`{$VAR}`, `{$VAR:default}`, `{env.VAR}`) are kept as written:
//! the converter turns them into Sluice's own `${VAR}` interpolation, so the
//! imported config still reads the variables when it is loaded.

use std::fmt;
use std::sync::Arc;

/// One token of a Caddyfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The token's text, quotes removed and escapes resolved.
    pub text: String,
    /// Where it starts.
    pub at: Location,
    /// Whether it was quoted, so `"{"` is text rather than a block.
    pub quoted: bool,
    /// Tokens of one import expansion share a number, so a directive never
    /// runs on into the next line of the importing file that happens to
    /// have the same line number.
    pub expansion: u32,
}

impl Token {
    /// Whether this is the unquoted `text`, such as `{` or `}`.
    pub fn is(&self, text: &str) -> bool {
        !self.quoted && self.text == text
    }

    /// Whether `next` starts a new line (and so a new directive) after `self`.
    pub fn ends_before(&self, next: &Token) -> bool {
        self.at.end_line < next.at.line
            || self.at.file != next.at.file
            || self.expansion != next.expansion
    }
}

/// A place in a Caddyfile, for messages and gap comments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, as named on the command line or in an `import`.
    pub file: Arc<str>,
    /// The 1-based line the token starts on.
    pub line: usize,
    /// The line it ends on (later than `line` for a quoted token spanning lines).
    pub end_line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A Caddyfile that cannot be tokenized or parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// File and line.
    pub file: Arc<str>,
    /// The 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for SyntaxError {}

/// Splits `text`, read from `file`, into tokens.
pub fn tokenize(file: &str, text: &str) -> Result<Vec<Token>, SyntaxError> {
    let file: Arc<str> = Arc::from(file);
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        if c == '\n' {
            line += 1;
            chars.next();
            continue;
        }
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '#' {
            while chars.peek().is_some_and(|&c| c != '\n') {
                chars.next();
            }
            continue;
        }
        if c == '<' && text_starts_heredoc(&chars) {
            return Err(SyntaxError {
                file: file.clone(),
                line,
                message:
                    "heredocs (<<MARKER) are not supported by the import; write the text in quotes"
                        .into(),
            });
        }
        let start = line;
        let mut word = String::new();
        let mut quoted = false;
        // A token is a run of bare text and quoted parts, as in `a"b c"`.
        while let Some(&c) = chars.peek() {
            match c {
                '"' | '`' => {
                    quoted = true;
                    chars.next();
                    let closed = read_quoted(&mut chars, c, &mut word, &mut line);
                    if !closed {
                        return Err(SyntaxError {
                            file: file.clone(),
                            line: start,
                            message: format!("unterminated {c}quoted{c} text"),
                        });
                    }
                }
                c if c.is_whitespace() => break,
                _ => {
                    word.push(c);
                    chars.next();
                }
            }
        }
        tokens.push(Token {
            text: word,
            at: Location {
                file: file.clone(),
                line: start,
                end_line: line,
            },
            quoted,
            expansion: 0,
        });
    }
    Ok(tokens)
}

/// Reads up to the closing `quote`; returns whether it was found.
fn read_quoted(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    quote: char,
    word: &mut String,
    line: &mut usize,
) -> bool {
    while let Some(c) = chars.next() {
        if c == quote {
            return true;
        }
        if c == '\n' {
            *line += 1;
        }
        // Inside double quotes, `\"` is a quote; any other backslash is kept,
        // as Caddy does, so Windows paths and regexes survive.
        if quote == '"' && c == '\\' && chars.peek() == Some(&'"') {
            word.push('"');
            chars.next();
            continue;
        }
        word.push(c);
    }
    false
}

fn text_starts_heredoc(chars: &std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    let mut ahead = chars.clone();
    ahead.next() == Some('<')
        && ahead.next() == Some('<')
        && ahead.next().is_some_and(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(tokens: &[Token]) -> Vec<(&str, usize)> {
        tokens
            .iter()
            .map(|t| (t.text.as_str(), t.at.line))
            .collect()
    }

    #[test]
    fn splits_on_whitespace_and_keeps_lines() {
        let tokens =
            tokenize("Caddyfile", "example.com {\n\treverse_proxy  app:8080\n}\n").unwrap();
        assert_eq!(
            texts(&tokens),
            [
                ("example.com", 1),
                ("{", 1),
                ("reverse_proxy", 2),
                ("app:8080", 2),
                ("}", 3)
            ]
        );
        assert!(tokens[1].is("{"));
    }

    #[test]
    fn comments_start_a_token_only() {
        let tokens = tokenize("f", "# a comment\nrespond a#b # gone\n").unwrap();
        assert_eq!(texts(&tokens), [("respond", 2), ("a#b", 2)]);
    }

    #[test]
    fn double_quotes_join_words_and_unescape_quotes() {
        let tokens = tokenize("f", r#"respond "hello \"you\" \d" 200"#).unwrap();
        assert_eq!(tokens[1].text, r#"hello "you" \d"#);
        assert!(tokens[1].quoted);
        assert_eq!(tokens[2].text, "200");
        assert!(!tokens[2].quoted);
    }

    #[test]
    fn backticks_are_raw_and_may_span_lines() {
        let tokens = tokenize("f", "respond `{\"a\": \"b\"}\nline two`\nnext").unwrap();
        assert_eq!(tokens[1].text, "{\"a\": \"b\"}\nline two");
        assert_eq!((tokens[1].at.line, tokens[1].at.end_line), (1, 2));
        assert_eq!(texts(&tokens)[2], ("next", 3));
        assert!(tokens[0].ends_before(&tokens[2]));
        assert!(!tokens[0].ends_before(&tokens[1]));
    }

    #[test]
    fn a_quoted_brace_is_not_a_block() {
        let tokens = tokenize("f", "respond \"{\"").unwrap();
        assert_eq!(tokens[1].text, "{");
        assert!(!tokens[1].is("{"));
    }

    #[test]
    fn placeholders_stay_as_written() {
        let tokens = tokenize("f", "reverse_proxy {$BACKEND:localhost:9000} {env.OTHER}").unwrap();
        assert_eq!(tokens[1].text, "{$BACKEND:localhost:9000}");
        assert_eq!(tokens[2].text, "{env.OTHER}");
    }

    #[test]
    fn unterminated_quotes_and_heredocs_are_errors() {
        let error = tokenize("Caddyfile", "a {\n respond \"oops\n}").unwrap_err();
        assert_eq!(
            error.to_string(),
            "Caddyfile:2: unterminated \"quoted\" text"
        );
        let error = tokenize("Caddyfile", "respond <<EOF\nhi\nEOF").unwrap_err();
        assert_eq!(error.line, 1);
        assert!(error.message.contains("heredoc"), "{error}");
    }
}
