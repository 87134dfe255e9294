//! The DNS-01 records Sluice created at Cloudflare and has not deleted yet,
//! kept apart from the orders that made them.
//!
//! An order can end midway: its lock is lost and another instance takes
//! over, or the process stops. A record whose creation was under way then
//! is still made by Cloudflare, which had the request, and only the answer
//! carries the record's ID. So each creation runs to its end in a task of
//! its own and lists here what it made. An order deletes its own records
//! once it ends, however it ends, and a record made after its order let go
//! (or after the process began to stop) is deleted as soon as it is made.
//! [`ChallengeRecords::withdraw_all`] deletes what is left when the process
//! stops.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cloudflare::{Cloudflare, TxtRecord};

/// The records created and not deleted yet, and the creations under way.
#[derive(Default)]
pub(super) struct ChallengeRecords {
    state: Mutex<State>,
    /// Woken whenever a creation ends.
    creation_ended: tokio::sync::Notify,
    next_order: AtomicU64,
}

#[derive(Default)]
struct State {
    listed: Vec<Listed>,
    /// The orders with creations under way, and how many each has.
    creating: HashMap<u64, usize>,
    /// Orders that withdrew while creations of theirs were under way: a
    /// record those make is deleted at once.
    withdrawn: HashSet<u64>,
    /// Set by [`ChallengeRecords::withdraw_all`]: no creation starts, and
    /// a record made afterwards is deleted at once.
    closed: bool,
}

/// One record, the order it answers for, and the client that deletes it.
struct Listed {
    order: u64,
    record: TxtRecord,
    cloudflare: Arc<Cloudflare>,
}

/// A creation under way, counted against its order until it is dropped:
/// at the end of the creation's task, however that task ends.
struct UnderWay {
    records: Arc<ChallengeRecords>,
    order: u64,
}

impl Drop for UnderWay {
    fn drop(&mut self) {
        {
            let mut state = self.records.lock();
            let ended = match state.creating.get_mut(&self.order) {
                Some(count) => {
                    *count -= 1;
                    *count == 0
                }
                None => false,
            };
            if ended {
                state.creating.remove(&self.order);
                state.withdrawn.remove(&self.order);
            }
        }
        self.records.creation_ended.notify_waiters();
    }
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
        {
            let mut state = self.lock();
            if state.closed {
                anyhow::bail!("the process is stopping; {name} was not created");
            }
            *state.creating.entry(order).or_default() += 1;
        }
        let under_way = UnderWay {
            records: self.clone(),
            order,
        };
        let cloudflare = cloudflare.clone();
        let creation = tokio::spawn(async move {
            let created = cloudflare.create_txt(&zone, &name, &content).await;
            if let Ok(record) = &created {
                let listed = Listed {
                    order,
                    record: record.clone(),
                    cloudflare,
                };
                let late = {
                    let mut state = under_way.records.lock();
                    let late = state.closed || state.withdrawn.contains(&order);
                    if !late {
                        state.listed.push(listed);
                        None
                    } else {
                        Some(listed)
                    }
                };
                if let Some(listed) = late {
                    delete(listed).await;
                }
            }
            // Listed (or deleted) before the creation stops counting, so
            // that whoever waits for it finds its record.
            drop(under_way);
            created.map(drop)
        });
        creation.await?
    }

    /// Deletes `order`'s records, once its creations under way have ended
    /// or `within` has passed; a record one of them makes later is deleted
    /// as soon as it is made.
    pub(super) async fn withdraw(&self, order: u64, within: Duration) {
        let settled = self
            .settle(within, |state| !state.creating.contains_key(&order))
            .await;
        let mine = {
            let mut state = self.lock();
            if !settled {
                state.withdrawn.insert(order);
            }
            let (mine, others) = std::mem::take(&mut state.listed)
                .into_iter()
                .partition(|l| l.order == order);
            state.listed = others;
            mine
        };
        delete_all(mine).await;
    }

    /// Deletes every record, after the creations under way have ended,
    /// all within `within`, and lets no creation start afterwards: what
    /// the process does when it begins to stop. A creation that ends later
    /// deletes its record at once.
    pub(super) async fn withdraw_all(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        self.lock().closed = true;
        // Half the time for the creations, the rest for the deletions.
        self.settle(within / 2, |state| state.creating.is_empty())
            .await;
        let all = std::mem::take(&mut self.lock().listed);
        if tokio::time::timeout_at(deadline, delete_all(all))
            .await
            .is_err()
        {
            tracing::warn!(
                "DNS-01 records were still being deleted after {within:?}; some may be left behind"
            );
        }
    }

    /// Waits until `done` holds, or `within` has passed; whether it holds.
    async fn settle(&self, within: Duration, done: impl Fn(&State) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before the check, so that no creation ends unseen
            // between the two.
            let ended = self.creation_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if done(&self.lock()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                tracing::warn!(
                    "a DNS-01 record creation did not end within {within:?}; its record is deleted once it is made"
                );
                return false;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Deletes `records`, all at once.
async fn delete_all(records: Vec<Listed>) {
    let mut deletions = tokio::task::JoinSet::new();
    for listed in records {
        deletions.spawn(delete(listed));
    }
    while deletions.join_next().await.is_some() {}
}

/// Deletes one record, logging it when Cloudflare would not.
async fn delete(listed: Listed) {
    if let Err(e) = listed.cloudflare.delete(&listed.record).await {
        tracing::warn!(record = %listed.record.name, error = %format!("{e:#}"), "cannot delete a DNS-01 record");
    }
}
