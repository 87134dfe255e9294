//! The block tree of a Caddyfile: an optional global options block, then
//! site blocks, each a list of directives with arguments and sub-blocks.
//!
//! Snippets (`(name) { ... }`) and `import` are expanded on the token
//! stream before the tree is built, as Caddy does, so an imported directive
//! behaves exactly as if it were written in place; its tokens keep the file
//! and line of the snippet, which is where a reader would fix it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::lexer::{tokenize, Location, SyntaxError, Token};

/// A directive: its name, its arguments on the same line, and its block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The directive's name token (e.g. `reverse_proxy`, `@api`).
    pub name: Token,
    /// The arguments on its line.
    pub args: Vec<Token>,
    /// The directives of its `{ ... }` block, if it has one.
    pub block: Vec<Directive>,
}

impl Directive {
    /// Where it is written.
    pub fn at(&self) -> &Location {
        &self.name.at
    }

    /// The name and arguments, as written on its line (for messages).
    pub fn summary(&self) -> String {
        let mut text = self.name.text.clone();
        for arg in &self.args {
            text.push(' ');
            if arg.quoted || arg.text.contains(char::is_whitespace) {
                text.push_str(&format!("{:?}", arg.text));
            } else {
                text.push_str(&arg.text);
            }
        }
        if !self.block.is_empty() {
            text.push_str(" { ... }");
        }
        text
    }

    /// The argument texts.
    pub fn arg_texts(&self) -> Vec<&str> {
        self.args.iter().map(|t| t.text.as_str()).collect()
    }
}

/// A site block: its addresses and directives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteBlock {
    /// The site addresses, commas removed.
    pub addresses: Vec<Token>,
    /// Its directives, in the order written.
    pub directives: Vec<Directive>,
}

/// A parsed Caddyfile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caddyfile {
    /// The global options block (`{ ... }` first in the file), if any.
    pub global: Vec<Directive>,
    /// The site blocks, in order.
    pub sites: Vec<SiteBlock>,
}

/// Snippets by name, their tokens without the braces.
type Snippets = HashMap<String, Vec<Token>>;

/// Imports (snippets and files) nested deeper than this are a cycle.
const MAX_IMPORT_DEPTH: usize = 16;

/// Reads and parses the Caddyfile at `path`, with the files it imports.
pub fn parse_file(path: &Path) -> Result<Caddyfile, SyntaxError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SyntaxError {
        file: name.as_str().into(),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&name, &text, &base)
}

/// Parses Caddyfile `text`, named `file`; relative file imports are read
/// from `base`.
pub fn parse(file: &str, text: &str, base: &Path) -> Result<Caddyfile, SyntaxError> {
    let tokens = tokenize(file, text)?;
    let (tokens, snippets) = take_snippets(tokens)?;
    let mut expander = Expander {
        snippets,
        base: base.to_path_buf(),
        next_expansion: 1,
    };
    let tokens = expander.expand(tokens, 0)?;
    build(&tokens)
}

/// Removes top-level `(name) { ... }` definitions from the stream.
fn take_snippets(tokens: Vec<Token>) -> Result<(Vec<Token>, Snippets), SyntaxError> {
    let mut rest = Vec::with_capacity(tokens.len());
    let mut snippets = HashMap::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        let starts_line = i == 0 || tokens[i - 1].ends_before(token);
        if depth == 0 && starts_line && is_snippet_name(token) {
            let Some(open) = tokens.get(i + 1).filter(|t| t.is("{")) else {
                return Err(error(&token.at, "a snippet needs a { ... } block"));
            };
            let close = matching_brace(&tokens, i + 1)
                .ok_or_else(|| error(&open.at, "this { is never closed"))?;
            let name = token.text[1..token.text.len() - 1].to_string();
            snippets.insert(name, tokens[i + 2..close].to_vec());
            i = close + 1;
            continue;
        }
        if token.is("{") {
            depth += 1;
        } else if token.is("}") {
            depth = depth.saturating_sub(1);
        }
        rest.push(token.clone());
        i += 1;
    }
    Ok((rest, snippets))
}

fn is_snippet_name(token: &Token) -> bool {
    !token.quoted
        && token.text.len() > 2
        && token.text.starts_with('(')
        && token.text.ends_with(')')
}

/// The index of the `}` closing the `{` at `open`.
fn matching_brace(tokens: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate().skip(open) {
        if token.is("{") {
            depth += 1;
        } else if token.is("}") {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

struct Expander {
    snippets: Snippets,
    base: PathBuf,
    next_expansion: u32,
}

impl Expander {
    /// Replaces every `import` line with the snippet or file it names.
    fn expand(&mut self, tokens: Vec<Token>, depth: usize) -> Result<Vec<Token>, SyntaxError> {
        let mut out = Vec::with_capacity(tokens.len());
        let mut i = 0;
        while i < tokens.len() {
            let token = &tokens[i];
            let starts_line = i == 0 || tokens[i - 1].ends_before(token);
            if !(starts_line && token.is("import")) {
                out.push(token.clone());
                i += 1;
                continue;
            }
            let mut end = i + 1;
            while end < tokens.len() && !tokens[end - 1].ends_before(&tokens[end]) {
                end += 1;
            }
            let args: Vec<String> = tokens[i + 1..end].iter().map(|t| t.text.clone()).collect();
            let Some(target) = args.first() else {
                return Err(error(&token.at, "import needs a snippet name or a file"));
            };
            if depth >= MAX_IMPORT_DEPTH {
                return Err(error(
                    &token.at,
                    &format!("import {target}: imports nest too deep (a cycle?)"),
                ));
            }
            let imported = match self.snippets.get(target.as_str()) {
                Some(snippet) => snippet.clone(),
                None => self.read_file(token, target)?,
            };
            let expansion = self.next_expansion;
            self.next_expansion += 1;
            let substituted = imported
                .into_iter()
                .flat_map(|t| substitute_args(t, &args[1..]))
                .map(|mut t| {
                    t.expansion = expansion;
                    t
                })
                .collect();
            out.extend(self.expand(substituted, depth + 1)?);
            i = end;
        }
        Ok(out)
    }

    fn read_file(&self, at: &Token, target: &str) -> Result<Vec<Token>, SyntaxError> {
        if target.contains(['*', '?', '[']) {
            return Err(error(
                &at.at,
                &format!("import {target}: glob imports are not supported; import each file"),
            ));
        }
        let path = self.base.join(target);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            error(
                &at.at,
                &format!(
                    "import {target}: no snippet of that name, and {} cannot be read: {e}",
                    path.display()
                ),
            )
        })?;
        let tokens = tokenize(&path.display().to_string(), &text)?;
        Ok(tokens)
    }
}

/// Replaces `{args[N]}` and `{args.N}` with the import's arguments; a token
/// that is exactly `{args[:]}` becomes all of them.
fn substitute_args(mut token: Token, args: &[String]) -> Vec<Token> {
    if token.text == "{args[:]}" {
        return args
            .iter()
            .map(|arg| Token {
                text: arg.clone(),
                ..token.clone()
            })
            .collect();
    }
    for (n, arg) in args.iter().enumerate() {
        token.text = token
            .text
            .replace(&format!("{{args[{n}]}}"), arg)
            .replace(&format!("{{args.{n}}}"), arg);
    }
    vec![token]
}

/// Builds the tree from the expanded token stream.
fn build(tokens: &[Token]) -> Result<Caddyfile, SyntaxError> {
    let mut caddyfile = Caddyfile::default();
    let mut i = 0;
    if tokens.first().is_some_and(|t| t.is("{")) {
        i = 1;
        caddyfile.global = directives(tokens, &mut i, Some(&tokens[0]))?;
    }
    while i < tokens.len() {
        let first = &tokens[i];
        let mut addresses = Vec::new();
        // Addresses run to the `{`; a line ending in a comma continues them.
        while let Some(token) = tokens.get(i) {
            if token.is("{") {
                break;
            }
            if token.is("}") {
                return Err(error(&token.at, "unexpected }"));
            }
            let continues = token.text.ends_with(',');
            addresses.extend(
                token
                    .text
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(|a| Token {
                        text: a.to_string(),
                        ..token.clone()
                    }),
            );
            i += 1;
            match tokens.get(i) {
                Some(next) if token.ends_before(next) && !continues && !next.is("{") => break,
                _ => {}
            }
        }
        match tokens.get(i) {
            Some(open) if open.is("{") => {
                i += 1;
                let body = directives(tokens, &mut i, Some(open))?;
                caddyfile.sites.push(SiteBlock {
                    addresses,
                    directives: body,
                });
            }
            // A file of one site may leave out the braces: the rest is its body.
            _ if caddyfile.sites.is_empty() => {
                let body = directives(tokens, &mut i, None)?;
                caddyfile.sites.push(SiteBlock {
                    addresses,
                    directives: body,
                });
            }
            _ => {
                return Err(error(
                    &first.at,
                    "a site block needs { ... } when the file has several sites",
                ))
            }
        }
    }
    Ok(caddyfile)
}

/// Reads directives up to the `}` closing `open` (or the end, without one).
fn directives(
    tokens: &[Token],
    i: &mut usize,
    open: Option<&Token>,
) -> Result<Vec<Directive>, SyntaxError> {
    let mut list = Vec::new();
    loop {
        let Some(name) = tokens.get(*i) else {
            return match open {
                Some(open) => Err(error(&open.at, "this { is never closed")),
                None => Ok(list),
            };
        };
        *i += 1;
        if name.is("}") {
            return match open {
                Some(_) => Ok(list),
                None => Err(error(&name.at, "unexpected }")),
            };
        }
        if name.is("{") {
            return Err(error(&name.at, "unexpected {"));
        }
        let mut directive = Directive {
            name: name.clone(),
            args: Vec::new(),
            block: Vec::new(),
        };
        let mut last = name;
        while let Some(token) = tokens.get(*i) {
            if last.ends_before(token) || token.is("}") {
                break;
            }
            *i += 1;
            if token.is("{") {
                directive.block = directives(tokens, i, Some(token))?;
                break;
            }
            directive.args.push(token.clone());
            last = token;
        }
        list.push(directive);
    }
}

fn error(at: &Location, message: &str) -> SyntaxError {
    SyntaxError {
        file: at.file.clone(),
        line: at.line,
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Caddyfile {
        parse("Caddyfile", text, Path::new(".")).unwrap()
    }

    fn names(directives: &[Directive]) -> Vec<String> {
        directives.iter().map(Directive::summary).collect()
    }

    #[test]
    fn global_options_and_sites() {
        let file = parse_text(
            "{\n\temail ops@example.com\n\tadmin off\n}\n\na.example.com, b.example.com {\n\treverse_proxy app:8080 {\n\t\theader_up Host {upstream_hostport}\n\t}\n}\n:8080 {\n\trespond \"hi\" 200\n}\n",
        );
        assert_eq!(names(&file.global), ["email ops@example.com", "admin off"]);
        assert_eq!(file.sites.len(), 2);
        let addresses: Vec<_> = file.sites[0]
            .addresses
            .iter()
            .map(|t| t.text.as_str())
            .collect();
        assert_eq!(addresses, ["a.example.com", "b.example.com"]);
        let proxy = &file.sites[0].directives[0];
        assert_eq!(proxy.arg_texts(), ["app:8080"]);
        assert_eq!(names(&proxy.block), ["header_up Host {upstream_hostport}"]);
        assert_eq!(proxy.at().line, 7);
        assert_eq!(names(&file.sites[1].directives), [r#"respond "hi" 200"#]);
    }

    #[test]
    fn addresses_may_continue_over_lines_after_a_comma() {
        let file = parse_text("a.example.com,\n  b.example.com {\n  respond ok\n}\n");
        assert_eq!(file.sites[0].addresses.len(), 2);
    }

    #[test]
    fn a_single_site_may_leave_out_braces() {
        let file = parse_text("localhost:8080\nrespond ok\nlog\n");
        assert_eq!(file.sites[0].addresses[0].text, "localhost:8080");
        assert_eq!(names(&file.sites[0].directives), ["respond ok", "log"]);
    }

    #[test]
    fn snippets_are_expanded_with_arguments() {
        let file = parse_text(
            "(common) {\n\theader X-Site {args[0]}\n\tencode gzip\n}\n\nexample.com {\n\timport common shop\n\treverse_proxy app:80\n}\n",
        );
        let site = &file.sites[0];
        assert_eq!(
            names(&site.directives),
            ["header X-Site shop", "encode gzip", "reverse_proxy app:80"]
        );
        // Imported tokens keep the snippet's lines.
        assert_eq!(site.directives[0].at().line, 2);
        assert_eq!(site.directives[2].at().line, 8);
    }

    #[test]
    fn snippet_lines_never_merge_with_the_importing_line() {
        // `header` in the snippet is on line 2, like `respond` in the site:
        // they stay two directives.
        let file = parse_text("(h) {\n header A b\n}\nx {\nimport h\nrespond ok\n}\n");
        assert_eq!(
            names(&file.sites[0].directives),
            ["header A b", "respond ok"]
        );
    }

    #[test]
    fn files_are_imported_relative_to_the_caddyfile() {
        let dir = std::env::temp_dir().join(format!("sluice-import-parse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("common.caddy"), "header -Server\n").unwrap();
        let file = parse("Caddyfile", "x {\nimport common.caddy\n}\n", &dir).unwrap();
        assert_eq!(names(&file.sites[0].directives), ["header -Server"]);
        assert!(file.sites[0].directives[0]
            .at()
            .file
            .ends_with("common.caddy"));
        let error = parse("Caddyfile", "x {\nimport missing\n}\n", &dir).unwrap_err();
        assert_eq!(error.line, 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn import_cycles_are_errors() {
        let error = parse(
            "Caddyfile",
            "(a) {\nimport a\n}\nx {\nimport a\n}\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(error.message.contains("too deep"), "{error}");
    }

    #[test]
    fn unbalanced_braces_are_errors_with_lines() {
        let error = parse("Caddyfile", "x {\n reverse_proxy a {\n}\n", Path::new(".")).unwrap_err();
        assert_eq!(
            (error.line, error.message.as_str()),
            (1, "this { is never closed")
        );
        let error = parse("Caddyfile", "x {\n}\n}\n", Path::new(".")).unwrap_err();
        assert_eq!((error.line, error.message.as_str()), (3, "unexpected }"));
    }

    #[test]
    fn named_matchers_are_directives_with_blocks() {
        let file = parse_text("x {\n@api {\n path /api/*\n header X-A b\n}\n@h host a.com\n}\n");
        let matcher = &file.sites[0].directives[0];
        assert_eq!(matcher.name.text, "@api");
        assert_eq!(names(&matcher.block), ["path /api/*", "header X-A b"]);
        assert_eq!(names(&file.sites[0].directives[1..]), ["@h host a.com"]);
    }
}
