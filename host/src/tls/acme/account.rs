//! The ACME account: one per CA directory, its credentials kept in the
//! ACME storage and reused on every later start.

use std::future::Future;
use std::pin::Pin;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use instant_acme::{
    Account, AccountCredentials, BodyWrapper, BytesResponse, HttpClient, NewAccount,
};

use super::storage::{account_lock, AcmeStorage};

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
/// created (terms of service agreed) and its credentials stored. Creation
/// runs under the account's lock, so a fleet creates one account.
pub(super) async fn load_or_create(
    http: reqwest::Client,
    directory: &str,
    email: Option<&str>,
    storage: &dyn AcmeStorage,
) -> anyhow::Result<Account> {
    let builder = || Account::builder_with_http(Box::new(ReqwestHttp(http.clone())));
    if let Some(credentials) = storage.load_account(directory).await? {
        return restore(builder(), &credentials, directory).await;
    }
    let lock = storage.lock(&account_lock(directory)).await?;
    // Another instance may have created it while this one waited.
    if let Some(credentials) = storage.load_account(directory).await? {
        return restore(builder(), &credentials, directory).await;
    }
    let contact = email.map(|email| format!("mailto:{email}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()
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
    storage
        .save_account(directory, &serde_json::to_vec_pretty(&credentials)?, &lock)
        .await?;
    tracing::info!(directory, storage = %storage.describe(), "created an ACME account");
    Ok(account)
}

/// The account whose stored credentials are `credentials`.
async fn restore(
    builder: instant_acme::AccountBuilder,
    credentials: &[u8],
    directory: &str,
) -> anyhow::Result<Account> {
    let credentials: AccountCredentials =
        serde_json::from_slice(credentials).with_context(|| {
            format!("the stored account for {directory} is not ACME account credentials")
        })?;
    builder
        .from_credentials(credentials)
        .await
        .with_context(|| format!("cannot restore the ACME account for {directory}"))
}
