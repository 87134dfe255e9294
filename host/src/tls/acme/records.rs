//! The DNS-01 records Sluice created at Cloudflare and has not deleted yet,
//! kept apart from the orders that made them.
//!
//! An order can end midway: its lock is lost and another instance takes
//! over, or the process stops. A record whose creation was under way then
//! is still made by Cloudflare, which had the request, and only the answer
//! carries the record's ID. So each creation runs to its end in a task of
//! its own and lists here what it made. An order deletes its own records
//! once it ends, however it ends, and [`ChallengeRecords::withdraw_all`]
//! deletes what is left when the process stops: no TXT record is left
//! behind in the operator's zone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cloudflare::{Cloudflare, TxtRecord};

/// The records created and not deleted yet, and the creations under way.
#[derive(Default)]
pub(super) struct ChallengeRecords {
    listed: Mutex<Vec<Listed>>,
    /// Creations under way, whose records are not listed yet.
    creating: tokio::sync::watch::Sender<usize>,
    /// Set by [`ChallengeRecords::withdraw_all`]: no creation starts after.
    closed: AtomicBool,
    next_order: AtomicU64,
}

/// One record, the order it answers for, and the client that deletes it.
struct Listed {
    order: u64,
    record: TxtRecord,
    cloudflare: Arc<Cloudflare>,
}

impl ChallengeRecords {
    /// A new order's number, which its records are listed under.
    pub(super) fn new_order(&self) -> u64 {
        self.next_order.fetch_add(1, Ordering::Relaxed)
    }

    /// Creates the TXT record `name` with `content` in `zone` for `order`.
    /// The creation runs to its end even if the caller stops waiting, and
    /// the record is listed as soon as Cloudflare answers with it.
    pub(super) async fn create(
        self: &Arc<Self>,
        order: u64,
        cloudflare: &Arc<Cloudflare>,
        zone: String,
        name: String,
        content: String,
    ) -> anyhow::Result<()> {
        self.creating.send_modify(|under_way| *under_way += 1);
        // Checked after counting the creation: either `withdraw_all` waits
        // for it, or it sees the flag and creates nothing.
        if self.closed.load(Ordering::SeqCst) {
            self.creating.send_modify(|under_way| *under_way -= 1);
            anyhow::bail!("the process is stopping; {name} was not created");
        }
        let (records, cloudflare) = (self.clone(), cloudflare.clone());
        let creation = tokio::spawn(async move {
            let created = cloudflare.create_txt(&zone, &name, &content).await;
            if let Ok(record) = &created {
                records.lock().push(Listed {
                    order,
                    record: record.clone(),
                    cloudflare: cloudflare.clone(),
                });
            }
            records.creating.send_modify(|under_way| *under_way -= 1);
            created.map(drop)
        });
        creation.await?
    }

    /// Deletes `order`'s records, once the creations under way have ended
    /// or `within` has passed.
    pub(super) async fn withdraw(&self, order: u64, within: Duration) {
        self.settle(within).await;
        let mine = {
            let mut listed = self.lock();
            let (mine, others) = listed.drain(..).partition(|l| l.order == order);
            *listed = others;
            mine
        };
        delete(mine).await;
    }

    /// Deletes every record, once the creations under way have ended or
    /// `within` has passed, and lets no creation start afterwards: what the
    /// process does before it exits.
    pub(super) async fn withdraw_all(&self, within: Duration) {
        self.closed.store(true, Ordering::SeqCst);
        self.settle(within).await;
        let all = std::mem::take(&mut *self.lock());
        delete(all).await;
    }

    /// Waits until no creation is under way, or `within` has passed.
    async fn settle(&self, within: Duration) {
        let mut under_way = self.creating.subscribe();
        if tokio::time::timeout(within, under_way.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!(
                "a DNS-01 record creation did not end within {within:?}; a record it made may be left behind"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Listed>> {
        self.listed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Deletes `records`, logging the ones Cloudflare would not delete.
async fn delete(records: Vec<Listed>) {
    for listed in records {
        if let Err(e) = listed.cloudflare.delete(&listed.record).await {
            tracing::warn!(record = %listed.record.name, error = %format!("{e:#}"), "cannot delete a DNS-01 record");
        }
    }
}
