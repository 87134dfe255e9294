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
//! Deletions, too, run to their end in tasks of their own.
//! [`ChallengeRecords::withdraw_all`] deletes what is left when the process
//! begins to stop, and waits, within a bound, until no creation or deletion
//! is under way.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cloudflare::{Cloudflare, TxtRecord};

/// The records created and not deleted yet, and the creations under way.
#[derive(Default)]
pub(super) struct ChallengeRecords {
    state: Mutex<State>,
    /// Woken whenever a creation or a deletion ends.
    work_ended: tokio::sync::Notify,
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
    /// Deletions under way, of records taken off the list.
    deleting: usize,
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

/// Work under way, counted until it is dropped: at the end of its task,
/// however that task ends (finished, panicked or aborted).
struct UnderWay {
    records: Arc<ChallengeRecords>,
    work: Work,
}

enum Work {
    /// A record creation for this order.
    Creating(u64),
    /// A record deletion.
    Deleting,
}

impl Drop for UnderWay {
    fn drop(&mut self) {
        {
            let mut state = self.records.lock();
            match self.work {
                Work::Creating(order) => {
                    let ended = state.creating.get_mut(&order).is_some_and(|count| {
                        *count -= 1;
                        *count == 0
                    });
                    if ended {
                        state.creating.remove(&order);
                        state.withdrawn.remove(&order);
                    }
                }
                Work::Deleting => state.deleting -= 1,
            }
        }
        self.records.work_ended.notify_waiters();
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
            work: Work::Creating(order),
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
    pub(super) async fn withdraw(self: &Arc<Self>, order: u64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let settled = self
            .settle(deadline, |state| !state.creating.contains_key(&order))
            .await;
        if !settled {
            tracing::warn!(
                "a DNS-01 record creation did not end within {within:?}; its record is deleted once it is made"
            );
        }
        let mine = {
            let mut state = self.lock();
            if state.creating.contains_key(&order) {
                state.withdrawn.insert(order);
            }
            take_for_deletion(&mut state, |listed| listed.order == order)
        };
        for deletion in self.spawn_deletions(mine) {
            let _ = deletion.await;
        }
    }

    /// Deletes every record and lets no creation start afterwards, then
    /// waits, for at most `within`, until the creations and deletions under
    /// way have ended (a creation that ends deletes its record at once):
    /// what the process does when it begins to stop.
    pub(super) async fn withdraw_all(self: &Arc<Self>, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let all = {
            let mut state = self.lock();
            state.closed = true;
            take_for_deletion(&mut state, |_| true)
        };
        self.spawn_deletions(all);
        let settled = self
            .settle(deadline, |state| {
                state.creating.is_empty() && state.deleting == 0
            })
            .await;
        if !settled {
            tracing::warn!(
                "DNS-01 records were still being created or deleted after {within:?}; some may be left behind"
            );
        }
    }

    /// Deletes `records`, taken off the list by [`take_for_deletion`],
    /// each in a task of its own that runs to its end even if the caller
    /// stops waiting.
    fn spawn_deletions(self: &Arc<Self>, records: Vec<Listed>) -> Vec<tokio::task::JoinHandle<()>> {
        records
            .into_iter()
            .map(|listed| {
                let under_way = UnderWay {
                    records: self.clone(),
                    work: Work::Deleting,
                };
                tokio::spawn(async move {
                    delete(listed).await;
                    drop(under_way);
                })
            })
            .collect()
    }

    /// Waits until `done` holds, or `deadline` has passed; whether it holds.
    async fn settle(&self, deadline: tokio::time::Instant, done: impl Fn(&State) -> bool) -> bool {
        loop {
            // Registered before the check, so that no work ends unseen
            // between the two.
            let ended = self.work_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if done(&self.lock()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return false;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Takes the records `pick` chooses off the list, counting their
/// deletions as under way from then on.
fn take_for_deletion(state: &mut State, pick: impl Fn(&Listed) -> bool) -> Vec<Listed> {
    let (taken, kept) = std::mem::take(&mut state.listed)
        .into_iter()
        .partition(|listed| pick(listed));
    state.listed = kept;
    state.deleting += taken.len();
    taken
}

/// Deletes one record, logging it when Cloudflare would not.
async fn delete(listed: Listed) {
    if let Err(e) = listed.cloudflare.delete(&listed.record).await {
        tracing::warn!(record = %listed.record.name, error = %format!("{e:#}"), "cannot delete a DNS-01 record");
    }
}
