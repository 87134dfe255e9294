//! The Cloudflare v4 API calls DNS-01 needs: find a zone, create a TXT
//! record, delete it.
//!
//! The API token is read from the environment variable the config names.
//! Errors name that variable and never contain the token.

use std::fmt;

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::CloudflareConfig;

/// An API client holding the token.
pub(super) struct Cloudflare {
    http: reqwest::Client,
    api_base: String,
    token_env: String,
    token: Token,
}

/// The API token; its `Debug` form hides it.
struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// A TXT record this client created.
#[derive(Debug, Clone)]
pub(super) struct TxtRecord {
    zone_id: String,
    id: String,
    /// The record's name, e.g. `_acme-challenge.example.com`.
    pub(super) name: String,
}

/// The v4 response envelope.
#[derive(Deserialize)]
struct Envelope<T> {
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    result: Option<T>,
}

#[derive(Deserialize)]
struct ApiMessage {
    code: i64,
    message: String,
}

#[derive(Deserialize)]
struct Zone {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct Record {
    id: String,
}

impl Cloudflare {
    /// A client with the token from the configured environment variable.
    pub(super) fn from_env(
        http: reqwest::Client,
        config: &CloudflareConfig,
    ) -> anyhow::Result<Self> {
        let token = match std::env::var(&config.token_env) {
            Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
            _ => anyhow::bail!(
                "the environment variable {} is not set; DNS-01 needs a Cloudflare API token with DNS edit permission there",
                config.token_env
            ),
        };
        Ok(Self {
            http,
            api_base: config.api_base.trim_end_matches('/').to_string(),
            token_env: config.token_env.clone(),
            token: Token(token),
        })
    }

    /// The ID of the zone `domain` belongs to: the longest zone name that is
    /// `domain` or one of its parents.
    pub(super) async fn zone_for(&self, domain: &str) -> anyhow::Result<String> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut candidate = domain.as_str();
        while candidate.contains('.') {
            let url = reqwest::Url::parse_with_params(
                &format!("{}/zones", self.api_base),
                [("name", candidate)],
            )
            .context("the Cloudflare API base is not a URL")?;
            let zones: Vec<Zone> = self
                .call(
                    Method::GET,
                    url,
                    None,
                    &format!("looking up the zone {candidate}"),
                )
                .await?;
            if let Some(zone) = zones
                .into_iter()
                .find(|z| z.name.eq_ignore_ascii_case(candidate))
            {
                return Ok(zone.id);
            }
            candidate = candidate.split_once('.').map_or("", |(_, parent)| parent);
        }
        anyhow::bail!(
            "no Cloudflare zone holds {domain}; the token in {} can see no zone of it or its parents",
            self.token_env
        )
    }

    /// Creates the TXT record `name` with `content` in the zone `zone_id`.
    pub(super) async fn create_txt(
        &self,
        zone_id: &str,
        name: &str,
        content: &str,
    ) -> anyhow::Result<TxtRecord> {
        let body = serde_json::json!({
            "type": "TXT",
            "name": name,
            "content": content,
            "ttl": 60,
        });
        let record: Record = self
            .call(
                Method::POST,
                self.url(&format!("zones/{zone_id}/dns_records"))?,
                Some(body),
                &format!("creating the TXT record {name}"),
            )
            .await?;
        Ok(TxtRecord {
            zone_id: zone_id.to_string(),
            id: record.id,
            name: name.to_string(),
        })
    }

    /// Deletes a record this client created.
    pub(super) async fn delete(&self, record: &TxtRecord) -> anyhow::Result<()> {
        let _: Record = self
            .call(
                Method::DELETE,
                self.url(&format!(
                    "zones/{}/dns_records/{}",
                    record.zone_id, record.id
                ))?,
                None,
                &format!("deleting the TXT record {}", record.name),
            )
            .await?;
        Ok(())
    }

    fn url(&self, path: &str) -> anyhow::Result<reqwest::Url> {
        reqwest::Url::parse(&format!("{}/{path}", self.api_base))
            .context("the Cloudflare API base is not a URL")
    }

    /// Sends one request and unwraps the envelope's `result`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: reqwest::Url,
        body: Option<serde_json::Value>,
        what: &str,
    ) -> anyhow::Result<T> {
        let mut request = self.http.request(method, url).bearer_auth(&self.token.0);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(reqwest::Error::without_url)
            .with_context(|| format!("Cloudflare API unreachable while {what}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("Cloudflare API answer unreadable while {what}"))?;
        let envelope: Option<Envelope<T>> = serde_json::from_str(&text).ok();
        let errors = envelope
            .as_ref()
            .map(|e| describe(&e.errors))
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| format!("HTTP {status}"));
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            anyhow::bail!(
                "Cloudflare rejected the API token in {} while {what} (HTTP {}): {errors}",
                self.token_env,
                status.as_u16()
            );
        }
        match envelope {
            Some(Envelope {
                success: true,
                result: Some(result),
                ..
            }) if status.is_success() => Ok(result),
            Some(_) => anyhow::bail!("Cloudflare API error while {what}: {errors}"),
            None => anyhow::bail!(
                "Cloudflare API answered HTTP {} without its JSON envelope while {what}",
                status.as_u16()
            ),
        }
    }
}

fn describe(errors: &[ApiMessage]) -> String {
    errors
        .iter()
        .map(|e| format!("{} ({})", e.message, e.code))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let token = Token("secret-value".into());
        assert_eq!(format!("{token:?}"), "Token(..)");
    }

    #[test]
    fn a_missing_variable_is_named() {
        let config = CloudflareConfig {
            token_env: "SLUICE_TEST_SURELY_UNSET_TOKEN".into(),
            api_base: "http://127.0.0.1:1".into(),
            resolver: "127.0.0.1:53".parse().unwrap(),
            propagation_timeout: std::time::Duration::from_secs(1),
        };
        let error = Cloudflare::from_env(reqwest::Client::new(), &config)
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("SLUICE_TEST_SURELY_UNSET_TOKEN is not set"),
            "{error}"
        );
    }

    #[test]
    fn envelope_errors_are_described() {
        let envelope: Envelope<serde_json::Value> = serde_json::from_str(
            r#"{"success":false,"errors":[{"code":9109,"message":"Invalid access token"}],"messages":[],"result":null}"#,
        )
        .unwrap();
        assert!(!envelope.success);
        assert_eq!(describe(&envelope.errors), "Invalid access token (9109)");
    }
}
