//! The bounded frame queues between capture, the model stage and output.
//!
//! A [`FrameQueue`] holds at most `capacity` items. What happens when it is full depends on the
//! [`QueuePolicy`]: a live source must never wait (the newest frame wins and the oldest is
//! dropped and counted), a file source waits for room so that no frame is lost.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::stage::control::Live;

/// What a full queue does with a new item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueuePolicy {
    /// Drop the oldest queued item to make room, and count the drop (live sources).
    NewestWins,
    /// Make the producer wait for room (files: every frame is processed).
    Backpressure,
}

/// The queue was closed; the item comes back to the caller.
#[derive(Debug)]
pub struct Closed<T>(pub T);

/// What a push found.
enum Push<T> {
    Closed(T),
    Added { dropped: bool },
    Full(T),
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// A bounded multi-producer, multi-consumer queue usable from async tasks and plain threads.
pub struct FrameQueue<T> {
    /// A panic while holding the lock leaves the queue's data intact: [`Live`] keeps going.
    state: Live<State<T>>,
    capacity: usize,
    policy: QueuePolicy,
    item_added: Notify,
    room_made: Notify,
    pushed: AtomicU64,
    dropped: AtomicU64,
}

impl<T> FrameQueue<T> {
    /// A queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize, policy: QueuePolicy) -> Self {
        Self {
            state: Live::new(State {
                items: VecDeque::with_capacity(capacity.max(1)),
                closed: false,
            }),
            capacity: capacity.max(1),
            policy,
            item_added: Notify::new(),
            room_made: Notify::new(),
            pushed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// The policy this queue was made with.
    pub fn policy(&self) -> QueuePolicy {
        self.policy
    }

    /// Adds an item, waiting for room under [`QueuePolicy::Backpressure`].
    pub async fn push(&self, item: T) -> Result<(), Closed<T>> {
        let mut item = item;
        loop {
            // Register interest before checking, so a pop between the check and the wait is seen.
            let room = self.room_made.notified();
            let outcome = self.state.update(|state| {
                if state.closed {
                    Push::Closed(item)
                } else if state.items.len() < self.capacity {
                    state.items.push_back(item);
                    Push::Added { dropped: false }
                } else if self.policy == QueuePolicy::NewestWins {
                    state.items.pop_front();
                    state.items.push_back(item);
                    Push::Added { dropped: true }
                } else {
                    Push::Full(item)
                }
            });
            match outcome {
                Push::Closed(item) => return Err(Closed(item)),
                Push::Added { dropped } => {
                    self.pushed.fetch_add(1, Ordering::Relaxed);
                    if dropped {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    self.item_added.notify_one();
                    return Ok(());
                }
                Push::Full(back) => item = back,
            }
            room.await;
        }
    }

    /// Takes the oldest item, waiting for one; `None` once the queue is closed and empty.
    pub async fn pop(&self) -> Option<T> {
        loop {
            let added = self.item_added.notified();
            let (item, more, closed) = self.state.update(|state| {
                let item = state.items.pop_front();
                (item, !state.items.is_empty(), state.closed)
            });
            if let Some(item) = item {
                self.room_made.notify_one();
                if more {
                    // Pass the wake-up on: another consumer may be waiting.
                    self.item_added.notify_one();
                }
                return Some(item);
            }
            if closed {
                return None;
            }
            added.await;
        }
    }

    /// Stops accepting items; queued items can still be popped. Wakes every waiter.
    pub fn close(&self) {
        self.state.update(|state| state.closed = true);
        self.item_added.notify_waiters();
        self.room_made.notify_waiters();
        // notify_waiters does not store a permit; give one to a task that is about to wait.
        self.item_added.notify_one();
        self.room_made.notify_one();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.state.read(|state| state.closed)
    }

    /// Items currently queued.
    pub fn len(&self) -> usize {
        self.state.read(|state| state.items.len())
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items accepted so far (including those later dropped).
    pub fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }

    /// Items dropped to make room for newer ones.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn closed_queue_drains_then_ends() {
        let queue = FrameQueue::new(4, QueuePolicy::Backpressure);
        queue.push(1).await.expect("open");
        queue.push(2).await.expect("open");
        queue.close();
        assert!(queue.push(3).await.is_err());
        assert_eq!(queue.pop().await, Some(1));
        assert_eq!(queue.pop().await, Some(2));
        assert_eq!(queue.pop().await, None);
    }

    #[tokio::test]
    async fn newest_wins_keeps_the_latest_items() {
        let queue = FrameQueue::new(2, QueuePolicy::NewestWins);
        for i in 0..5 {
            queue.push(i).await.expect("never blocks");
        }
        assert_eq!(queue.dropped(), 3);
        assert_eq!(queue.pop().await, Some(3));
        assert_eq!(queue.pop().await, Some(4));
    }

    #[tokio::test]
    async fn backpressure_blocks_the_producer_until_a_pop() {
        let queue = Arc::new(FrameQueue::new(1, QueuePolicy::Backpressure));
        queue.push(0).await.expect("room");
        let producer = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.push(1).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !producer.is_finished(),
            "push must wait while the queue is full"
        );
        assert_eq!(queue.pop().await, Some(0));
        assert!(producer.await.expect("joins"));
        assert_eq!(queue.pop().await, Some(1));
        assert_eq!(queue.dropped(), 0);
    }

    #[tokio::test]
    async fn close_wakes_a_waiting_consumer() {
        let queue = Arc::new(FrameQueue::<u32>::new(1, QueuePolicy::Backpressure));
        let consumer = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.pop().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        queue.close();
        let result = tokio::time::timeout(Duration::from_secs(2), consumer).await;
        assert_eq!(result.expect("woken").expect("joins"), None);
    }
}
