//! `sluice import caddyfile`: turns a Caddyfile into a Sluice config.
//!
//! The importer writes TOML text and the files it refers to; it knows
//! nothing of the proxy's runtime, so it builds and changes apart from it.
//!
//! [`lexer`] splits the file into tokens with their lines, [`caddyfile`]
//! builds the block tree (expanding snippets and imports), and [`convert`]
//! maps sites and directives onto listeners, routes and placements, listing
//! what has no Sluice equivalent. [`placeholders`] translates Caddy's
//! placeholders into Sluice's interpolation and plugin placeholders.

pub mod caddyfile;
pub mod convert;
pub mod lexer;
pub mod placeholders;

use std::path::Path;

pub use convert::{Conversion, Gap, GeneratedFile, Options};
pub use lexer::SyntaxError;

/// Reads the Caddyfile at `path` (with its imports) and converts it.
pub fn caddyfile(path: &Path, options: &Options) -> Result<Conversion, SyntaxError> {
    let parsed = caddyfile::parse_file(path)?;
    Ok(convert::convert(&parsed, options))
}

/// `sluice import caddyfile FILE [-o OUT] [--allow-partial]`: converts
/// `file`, lists every unsupported directive on stderr with its file and
/// line, and writes the config (to `output`, or stdout) unless something
/// was unsupported and `allow_partial` is off. Returns whether it wrote.
pub fn run(file: &Path, output: Option<&Path>, allow_partial: bool) -> Result<bool, String> {
    let here =
        std::env::current_dir().map_err(|e| format!("cannot read the working directory: {e}"))?;
    // Certificates generated for `tls internal` go next to the output; the
    // config names them by absolute path, since Sluice reads relative paths
    // from its working directory.
    let certificate_dir = output
        .map(|o| here.join(o))
        .and_then(|o| o.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| here.clone())
        .join("certs");
    let options = Options {
        source: file.display().to_string(),
        certificate_dir,
    };
    let conversion = caddyfile(file, &options).map_err(|e| e.to_string())?;
    for gap in &conversion.gaps {
        eprintln!("{}: unsupported: {}: {}", gap.at, gap.directive, gap.reason);
    }
    if !conversion.gaps.is_empty() && !allow_partial {
        eprintln!(
            "{}: {} unsupported directive(s); nothing written (with --allow-partial the config is written with a comment at each)",
            file.display(),
            conversion.gaps.len()
        );
        return Ok(false);
    }
    for generated in &conversion.files {
        write_generated(generated)?;
        eprintln!("wrote {}", generated.path.display());
    }
    match output {
        Some(path) => {
            std::fs::write(path, &conversion.toml)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{}", conversion.toml),
    }
    Ok(true)
}

fn write_generated(file: &GeneratedFile) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = file.path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mode = if file.private { 0o600 } else { 0o644 };
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&file.path)
        .and_then(|mut f| f.write_all(file.contents.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", file.path.display()))
}
