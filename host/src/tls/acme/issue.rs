//! One ACME order, from the new order to the certificate chain.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus,
    RetryPolicy,
};
use tokio::sync::Mutex;

use super::cloudflare::Cloudflare;
use super::records::ChallengeRecords;
use super::storage::{AcmeStorage, HeldLock};
use super::{account, dns, AcmeConfig, ChallengeKind, Issued};

/// How long the CA may take to validate the challenges, and then to issue.
const CA_POLL_TIMEOUT: Duration = Duration::from_secs(90);
/// The longest one HTTP request to the CA or to Cloudflare may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an order was abandoned: its lock was lost.
fn lost(lock: &HeldLock) -> anyhow::Error {
    anyhow::anyhow!(
        "the lock {} was lost during the order; it was abandoned",
        lock.name()
    )
}

/// Places orders with one CA under one account.
pub(super) struct Issuer {
    config: AcmeConfig,
    storage: Arc<dyn AcmeStorage>,
    http: reqwest::Client,
    /// Created or restored on the first order, then reused.
    account: Mutex<Option<Account>>,
    /// The DNS-01 records the orders created and have not deleted yet.
    pub(super) records: Arc<ChallengeRecords>,
}

/// What one order published for its challenges, withdrawn once it ends.
struct Answers {
    /// The order's number among the DNS-01 records.
    order: u64,
    /// The HTTP-01 tokens it published answers for.
    tokens: Vec<String>,
}

/// A challenge to answer: the name it proves and the answer.
struct Pending {
    /// The name, without a wildcard's `*.`.
    domain: String,
    token: String,
    /// The TXT value (DNS-01) or the key authorization (HTTP-01).
    answer: String,
}

impl Issuer {
    pub(super) fn new(config: &AcmeConfig, storage: Arc<dyn AcmeStorage>) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
        if let Some(path) = &config.ca_root {
            for root in super::read_roots(path)? {
                http = http.add_root_certificate(root);
            }
        }
        Ok(Self {
            config: config.clone(),
            storage,
            http: http.build().context("cannot build the ACME HTTP client")?,
            account: Mutex::new(None),
            records: Arc::default(),
        })
    }

    /// Orders a certificate for `names` and waits for it, under `lock`,
    /// which its HTTP-01 answers live as long as; abandons the order if the
    /// lock is lost.
    pub(super) async fn issue(&self, names: &[String], lock: &HeldLock) -> anyhow::Result<Issued> {
        let account = self.account().await?;
        let identifiers: Vec<_> = names.iter().cloned().map(Identifier::Dns).collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .with_context(|| format!("the CA refused an order for {names:?}"))?;
        let pending = self.pending(&mut order).await?;
        let cloudflare = match self.config.challenge {
            ChallengeKind::Dns01 if !pending.is_empty() => Some(Arc::new(Cloudflare::from_env(
                self.http.clone(),
                &self.config.cloudflare,
            )?)),
            _ => None,
        };
        let mut answers = Answers {
            order: self.records.new_order(),
            tokens: Vec::new(),
        };
        // An order that outlives its lock is abandoned, cleaning up what it
        // published: another instance has taken over by then.
        let proven = tokio::select! {
            proven = self.prove(&mut order, &pending, cloudflare.as_ref(), lock, &mut answers) => proven,
            () = lock.lost() => Err(lost(lock)),
        };
        for token in answers.tokens {
            self.storage.withdraw_answer(&token).await;
        }
        // A creation the lost lock interrupted still ends, and its record
        // is deleted with the others.
        self.records.withdraw(answers.order, REQUEST_TIMEOUT).await;
        proven?;
        let finished = async {
            let key_pem = order
                .finalize()
                .await
                .context("the CA refused to finalize the order")?;
            let chain_pem = order
                .poll_certificate(&RetryPolicy::new().timeout(CA_POLL_TIMEOUT))
                .await
                .context("the CA did not issue the certificate")?;
            Issued::from_pem(chain_pem, key_pem).context("the CA issued an unreadable certificate")
        };
        tokio::select! {
            issued = finished => issued,
            () = lock.lost() => Err(lost(lock)),
        }
    }

    /// The account, restored or created on first use.
    async fn account(&self) -> anyhow::Result<Account> {
        let mut account = self.account.lock().await;
        if let Some(account) = &*account {
            return Ok(account.clone());
        }
        let created = account::load_or_create(
            self.http.clone(),
            &self.config.directory,
            self.config.email.as_deref(),
            &*self.storage,
        )
        .await?;
        Ok(account.insert(created).clone())
    }

    fn challenge_type(&self) -> ChallengeType {
        match self.config.challenge {
            ChallengeKind::Dns01 => ChallengeType::Dns01,
            ChallengeKind::Http01 => ChallengeType::Http01,
        }
    }

    /// The challenges of the order's pending authorizations.
    async fn pending(&self, order: &mut Order) -> anyhow::Result<Vec<Pending>> {
        let kind = self.challenge_type();
        let mut pending = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.context("cannot fetch an authorization")?;
            let name = authorization.identifier().to_string();
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => anyhow::bail!("the authorization for {name} is {status:?}"),
            }
            let Identifier::Dns(domain) = authorization.identifier().identifier.clone() else {
                anyhow::bail!("{name} is not a DNS name");
            };
            let challenge = authorization.challenge(kind.clone()).with_context(|| {
                format!("the CA offers no {kind:?} challenge for {name} (wildcards need DNS-01)")
            })?;
            let key_authorization = challenge.key_authorization();
            pending.push(Pending {
                domain,
                token: challenge.token.clone(),
                answer: match kind {
                    ChallengeType::Dns01 => key_authorization.dns_value(),
                    _ => key_authorization.as_str().to_string(),
                },
            });
        }
        Ok(pending)
    }

    /// Publishes the answers (recording the HTTP-01 tokens in `answers`;
    /// DNS-01 records are listed in `self.records` under its order), tells
    /// the CA they are ready and waits for the order to become ready.
    async fn prove(
        &self,
        order: &mut Order,
        pending: &[Pending],
        cloudflare: Option<&Arc<Cloudflare>>,
        lock: &HeldLock,
        answers: &mut Answers,
    ) -> anyhow::Result<()> {
        match cloudflare {
            Some(cloudflare) => {
                for challenge in pending {
                    let zone = cloudflare.zone_for(&challenge.domain).await?;
                    let name = format!("_acme-challenge.{}", challenge.domain);
                    self.records
                        .create(
                            answers.order,
                            cloudflare,
                            zone,
                            name,
                            challenge.answer.clone(),
                        )
                        .await?;
                }
                let settings = &self.config.cloudflare;
                for challenge in pending {
                    let name = format!("_acme-challenge.{}", challenge.domain);
                    dns::wait_for_txt(
                        settings.resolver,
                        &name,
                        &[challenge.answer.as_str()],
                        settings.propagation_timeout,
                    )
                    .await?;
                }
            }
            None => {
                for challenge in pending {
                    answers.tokens.push(challenge.token.clone());
                    self.storage
                        .publish_answer(&challenge.token, &challenge.answer, lock)
                        .await?;
                }
            }
        }
        let kind = self.challenge_type();
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            if authorization.status != AuthorizationStatus::Pending {
                continue;
            }
            let mut challenge = authorization
                .challenge(kind.clone())
                .context("the challenge disappeared")?;
            challenge
                .set_ready()
                .await
                .context("the CA did not accept the challenge answer")?;
        }
        let status = order
            .poll_ready(&RetryPolicy::new().timeout(CA_POLL_TIMEOUT))
            .await
            .context("the CA did not validate the challenges")?;
        if status != OrderStatus::Ready {
            return Err(self.validation_errors(order).await);
        }
        Ok(())
    }

    /// Why the CA found the order invalid, from its challenges' errors.
    async fn validation_errors(&self, order: &mut Order) -> anyhow::Error {
        let kind = self.challenge_type();
        let mut reasons = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut authorization)) = authorizations.next().await {
            let name = authorization.identifier().to_string();
            if let Ok(state) = authorization.refresh().await {
                reasons.extend(
                    state
                        .challenges
                        .iter()
                        .filter(|c| c.r#type == kind)
                        .filter_map(|c| c.error.as_ref())
                        .map(|problem| format!("{name}: {problem}")),
                );
            }
        }
        anyhow::anyhow!(
            "the CA found the order invalid: {}",
            if reasons.is_empty() {
                "no reason given".to_string()
            } else {
                reasons.join("; ")
            }
        )
    }
}
