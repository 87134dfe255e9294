//! File helpers shared by the last known good config, ACME's storage and
//! the plugin cache: writes a reader never sees half done, and short
//! content versions.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary file beside it, created
/// with permissions `mode`, synced, then renamed over `path`: a reader, or
/// a restart after a crash, sees the old file or the new one, never a part.
/// Missing parent directories are created.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp-{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)?;
    // `mode` applies only to a new file; a leftover one keeps its own.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// A short, stable hash of some content: 12 hex digits of its SHA-256.
pub fn content_version(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole_with_its_mode() {
        let dir = std::env::temp_dir().join(format!("sluice-files-{}", std::process::id()));
        let path = dir.join("nested/secret.pem");
        write_atomically(&path, b"first", 0o600).unwrap();
        write_atomically(&path, b"second", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret.pem"], "no temporary file left behind");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn versions_are_short_and_follow_the_content() {
        assert_eq!(content_version(b"a").len(), 12);
        assert_eq!(content_version(b"a"), content_version(b"a"));
        assert_ne!(content_version(b"a"), content_version(b"b"));
    }
}
