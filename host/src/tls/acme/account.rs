//! The ACME account: one per CA directory, its credentials kept in the
//! state directory (0600) and reused on every later start.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use instant_acme::{
    Account, AccountCredentials, BodyWrapper, BytesResponse, HttpClient, NewAccount,
};

use super::storage::write_atomic;

/// Carries instant-acme's requests over the `reqwest` client Sluice already
/// uses, which trusts the configured extra roots besides the built-in ones.
struct ReqwestHttp(reqwest::Client);

impl HttpClient for ReqwestHttp {
    fn request(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let other = |e: reqwest::Error| instant_acme::Error::Other(Box::new(e));
            let (parts, body) = request.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let request = reqwest::Request::try_from(http::Request::from_parts(parts, body))
                .map_err(other)?;
            let response = http::Response::from(client.execute(request).await.map_err(other)?);
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(other)?.to_bytes();
            Ok(BytesResponse::from(http::Response::from_parts(
                parts,
                Full::new(body),
            )))
        })
    }
}

/// The account at `directory`: restored from its stored credentials, or
/// created (terms of service agreed) and its credentials stored.
pub(super) async fn load_or_create(
    http: reqwest::Client,
    directory: &str,
    email: Option<&str>,
    state_dir: &Path,
) -> anyhow::Result<Account> {
    let path = credentials_path(state_dir, directory);
    let builder = Account::builder_with_http(Box::new(ReqwestHttp(http)));
    match std::fs::read(&path) {
        Ok(bytes) => {
            let credentials: AccountCredentials = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not ACME account credentials", path.display()))?;
            return builder
                .from_credentials(credentials)
                .await
                .with_context(|| {
                    format!("cannot restore the ACME account from {}", path.display())
                });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let contact = email.map(|email| format!("mailto:{email}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.to_string(),
            None,
        )
        .await
        .with_context(|| format!("cannot create an ACME account at {directory}"))?;
    let parent = path.parent().expect("credentials live in a folder");
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    write_atomic(&path, &serde_json::to_vec_pretty(&credentials)?, 0o600)?;
    tracing::info!(directory, credentials = %path.display(), "created an ACME account");
    Ok(account)
}

/// `<state-dir>/acme/accounts/<host>-<hash of the URL>.json`: one file per CA.
fn credentials_path(state_dir: &Path, directory: &str) -> PathBuf {
    let host = reqwest::Url::parse(directory)
        .ok()
        .and_then(|url| url.host_str().map(str::to_string))
        .unwrap_or_default();
    let hash = crate::support::files::content_version(directory.as_bytes());
    state_dir
        .join("acme")
        .join("accounts")
        .join(format!("{host}-{hash}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_directory_has_its_own_credentials() {
        let dir = Path::new("/state");
        let production = credentials_path(dir, super::super::LETSENCRYPT_PRODUCTION);
        let staging = credentials_path(dir, super::super::LETSENCRYPT_STAGING);
        assert_ne!(production, staging);
        assert!(production.starts_with("/state/acme/accounts"));
        assert!(production
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("acme-v02.api.letsencrypt.org-"));
        assert_eq!(
            production,
            credentials_path(dir, super::super::LETSENCRYPT_PRODUCTION)
        );
    }
}
