//! Group commit: concurrent writers share one durable commit.
//!
//! A durable commit costs a few fsyncs (milliseconds), far more than the
//! change it carries. Writers therefore queue their changes; the first
//! writer that finds no commit in progress becomes the leader, takes every
//! change queued so far and commits them together, while writers arriving
//! meanwhile queue up for the next batch. Each writer returns only when the
//! batch holding its change has been committed (or has failed), with that
//! batch's outcome, so an acknowledged change is always a durable one.
//!
//! The leader runs the commit without holding the queue lock; batches never
//! overlap, so they commit in queue order.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

/// The queue of one store's pending changes.
pub struct GroupCommit<C, E> {
    queue: Mutex<Queue<C, E>>,
    settled: Condvar,
}

struct Queue<C, E> {
    pending: Vec<(u64, C)>,
    /// A leader is committing a batch right now.
    committing: bool,
    next_ticket: u64,
    /// Outcomes of committed batches not yet collected by their writers.
    outcomes: HashMap<u64, Result<(), E>>,
}

impl<C, E: Clone> Default for GroupCommit<C, E> {
    fn default() -> Self {
        GroupCommit {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                committing: false,
                next_ticket: 0,
                outcomes: HashMap::new(),
            }),
            settled: Condvar::new(),
        }
    }
}

impl<C, E: Clone> GroupCommit<C, E> {
    /// Queues `change` and returns once it is committed, with the outcome of
    /// its batch. If this writer becomes the leader, it calls `commit` with
    /// the batch (its own change and those queued before and with it, in
    /// queue order); `commit` must apply all of them or none.
    ///
    /// `panicked` makes the error the writers of a batch receive if
    /// `commit` panics (the leader's own thread then unwinds).
    pub fn submit(
        &self,
        change: C,
        commit: impl FnOnce(Vec<C>) -> Result<(), E>,
        panicked: fn() -> E,
    ) -> Result<(), E> {
        let mut queue = self.lock();
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.pending.push((ticket, change));
        loop {
            if let Some(outcome) = queue.outcomes.remove(&ticket) {
                return outcome;
            }
            if !queue.committing {
                // Our change is still queued (a leader that took it would
                // have left its outcome): lead this batch.
                queue.committing = true;
                let (tickets, batch): (Vec<u64>, Vec<C>) =
                    std::mem::take(&mut queue.pending).into_iter().unzip();
                drop(queue);
                // A panic in `commit` unwinds through `Settle`, which hands
                // every waiter an error instead of leaving them hanging.
                let mut settle = Settle {
                    group: self,
                    leader: ticket,
                    tickets,
                    outcome: Err(panicked()),
                };
                settle.outcome = commit(batch);
                return settle.outcome.clone();
            }
            queue = self
                .settled
                .wait(queue)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue<C, E>> {
        // The queue's invariants hold between statements; a panic elsewhere
        // cannot leave it half-updated.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Hands a batch's outcome to its writers and frees the leader's place,
/// also when the commit panics.
struct Settle<'a, C, E: Clone> {
    group: &'a GroupCommit<C, E>,
    /// The leader takes its outcome with it (or unwinds).
    leader: u64,
    tickets: Vec<u64>,
    outcome: Result<(), E>,
}

impl<C, E: Clone> Drop for Settle<'_, C, E> {
    fn drop(&mut self) {
        let mut queue = self.group.lock();
        queue.committing = false;
        for &ticket in self.tickets.iter().filter(|&&t| t != self.leader) {
            queue.outcomes.insert(ticket, self.outcome.clone());
        }
        self.group.settled.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// A "store" whose commits take a while, as fsync does.
    #[derive(Default)]
    struct SlowLog {
        group: GroupCommit<u32, String>,
        committed: Mutex<Vec<u32>>,
        batches: AtomicUsize,
        fail_with: Mutex<Option<u32>>,
    }

    impl SlowLog {
        fn append(&self, value: u32) -> Result<(), String> {
            self.group.submit(
                value,
                |batch| {
                    self.batches.fetch_add(1, Ordering::SeqCst);
                    // Stands in for the fsync; not a wait for another thread.
                    std::thread::sleep(Duration::from_millis(2));
                    if let Some(bad) = *self.fail_with.lock().unwrap() {
                        if batch.contains(&bad) {
                            return Err(format!("batch with {bad} failed"));
                        }
                    }
                    self.committed.lock().unwrap().extend(batch);
                    Ok(())
                },
                || "panicked".to_string(),
            )
        }
    }

    #[test]
    fn concurrent_writers_share_commits_and_see_their_change_committed() {
        let log = Arc::new(SlowLog::default());
        let threads: Vec<_> = (0..16u32)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..20 {
                        let value = t * 1000 + i;
                        log.append(value).unwrap();
                        assert!(
                            log.committed.lock().unwrap().contains(&value),
                            "acknowledged before committed"
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut committed = log.committed.lock().unwrap().clone();
        assert_eq!(committed.len(), 320);
        committed.sort_unstable();
        committed.dedup();
        assert_eq!(committed.len(), 320, "a change was committed twice");
        let batches = log.batches.load(Ordering::SeqCst);
        assert!(batches < 320, "no commit was shared ({batches} batches)");
    }

    #[test]
    fn a_failed_batch_fails_every_writer_in_it_and_the_next_batch_works() {
        let log = Arc::new(SlowLog::default());
        *log.fail_with.lock().unwrap() = Some(7);
        assert_eq!(log.append(7), Err("batch with 7 failed".into()));
        assert!(log.committed.lock().unwrap().is_empty());
        log.append(8).unwrap();
        assert_eq!(*log.committed.lock().unwrap(), vec![8]);
    }

    #[test]
    fn a_panicking_commit_fails_its_batch_and_frees_the_queue() {
        let group: Arc<GroupCommit<u32, String>> = Arc::default();
        let leader = {
            let group = Arc::clone(&group);
            std::thread::spawn(move || {
                group.submit(1, |_| panic!("commit blew up"), || "panicked".into())
            })
        };
        assert!(leader.join().is_err(), "the leader's panic propagates");
        assert_eq!(group.submit(2, |_| Ok(()), || "panicked".into()), Ok(()));
        assert!(group.lock().outcomes.is_empty(), "outcomes leak");
    }
}
