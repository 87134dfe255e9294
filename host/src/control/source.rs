//! Where a configuration comes from, and reading it: a local file, an
//! HTTP(S) URL fetched with `If-None-Match`, or a key in etcd.

use std::path::PathBuf;
use std::time::Duration;

/// Where the configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A local file.
    File(PathBuf),
    /// An HTTP(S) URL, polled.
    Url(String),
    /// A key in etcd, watched.
    Etcd(super::etcd::EtcdSource),
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(url) => f.write_str(url),
            Self::Etcd(source) => write!(f, "{source}"),
        }
    }
}

/// Text fetched from a source, with its ETag for remote sources (for etcd,
/// the revision it was last changed at).
pub(super) struct Fetched {
    pub text: String,
    pub etag: Option<String>,
}

/// The longest a remote config fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the source. `Ok(None)` means a remote source answered 304, or
/// etcd's config is still at the revision `etag` names.
pub(super) async fn fetch(
    source: &ConfigSource,
    etag: Option<&str>,
) -> Result<Option<Fetched>, String> {
    match source {
        ConfigSource::File(path) => match tokio::fs::read_to_string(path).await {
            Ok(text) => Ok(Some(Fetched { text, etag: None })),
            Err(e) => Err(format!("{}: cannot read file: {e}", path.display())),
        },
        ConfigSource::Etcd(source) => {
            let mut client = source.connect().await?;
            match source.read(&mut client).await? {
                Some((_, revision)) if etag == Some(revision.to_string().as_str()) => Ok(None),
                Some((text, revision)) => Ok(Some(Fetched {
                    text,
                    etag: Some(revision.to_string()),
                })),
                None => Err(format!(
                    "{source}: no config has been pushed there yet (sluice config push)"
                )),
            }
        }
        ConfigSource::Url(url) => {
            let client = reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("{url}: {e}"))?;
            let mut request = client.get(url);
            if let Some(etag) = etag {
                request = request.header(reqwest::header::IF_NONE_MATCH, etag);
            }
            let response = request
                .send()
                .await
                .map_err(|e| format!("{url}: {}", e.without_url()))?;
            let status = response.status();
            if status == reqwest::StatusCode::NOT_MODIFIED {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(format!("{url}: status {status}"));
            }
            let etag = response
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let text = response
                .text()
                .await
                .map_err(|e| format!("{url}: {}", e.without_url()))?;
            Ok(Some(Fetched { text, etag }))
        }
    }
}
