//! The offline write queue: local changes waiting to be pushed.
//!
//! Every local write becomes automerge change bytes in a [`QueuedOp`] with an
//! operation id. Ops leave the queue only when the server answered them (applied,
//! duplicate or rejected); an op whose push failed on the way stays, marked
//! `sent`, and is retried with the same id and the same changes, so the server
//! answers the retry from memory. Consecutive changes to one record go into one
//! op while that op was never sent: an op that went out may have been applied,
//! and its retry must carry exactly what the server may have seen.

use std::collections::VecDeque;

use serde_bytes::ByteBuf;

use crate::client::error::WriteError;
use crate::sync::PushOp;

/// The most changes one op gathers before a new op starts.
const MAX_CHANGES_PER_OP: usize = 64;

/// One queued operation.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedOp {
    /// The operation as pushed: id, table, record and change bytes.
    pub op: PushOp,
    /// The op was put in a push message at least once; it no longer gathers
    /// changes.
    pub sent: bool,
}

/// The queue of local operations, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteQueue {
    /// Prefix of every op id: unique per replica (the actor), so ids of a
    /// reinstalled app never collide with ids the server remembers.
    pub prefix: String,
    /// The number of the next op id.
    pub next_op: u64,
    pub ops: VecDeque<QueuedOp>,
}

impl WriteQueue {
    /// An empty queue whose op ids start with `prefix`.
    pub fn new(prefix: impl Into<String>) -> WriteQueue {
        WriteQueue {
            prefix: prefix.into(),
            next_op: 1,
            ops: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether an op for the record waits in the queue.
    pub fn has_ops_for(&self, table: &str, id: &str) -> bool {
        self.ops
            .iter()
            .any(|queued| queued.op.table == table && queued.op.id == id)
    }

    /// Refuses a write that would need a new op in a full queue.
    ///
    /// # Errors
    ///
    /// [`WriteError::QueueFull`].
    pub fn check_room(&self, table: &str, id: &str, limit: usize) -> Result<(), WriteError> {
        if self.ops.len() < limit || self.gathering(table, id).is_some() {
            return Ok(());
        }
        Err(WriteError::QueueFull { limit })
    }

    /// Queues `change` for the record; returns the id of the op that holds it.
    ///
    /// # Errors
    ///
    /// [`WriteError::QueueFull`] when a new op is needed and `limit` ops wait.
    pub fn enqueue(
        &mut self,
        table: &str,
        id: &str,
        change: Vec<u8>,
        limit: usize,
    ) -> Result<String, WriteError> {
        if let Some(position) = self.gathering(table, id) {
            let queued = &mut self.ops[position];
            queued.op.changes.push(ByteBuf::from(change));
            return Ok(queued.op.op.clone());
        }
        self.check_room(table, id, limit)?;
        let op = format!("{}-{}", self.prefix, self.next_op);
        self.next_op += 1;
        self.ops.push_back(QueuedOp {
            op: PushOp {
                op: op.clone(),
                table: table.to_owned(),
                id: id.to_owned(),
                changes: vec![ByteBuf::from(change)],
                ..PushOp::default()
            },
            sent: false,
        });
        Ok(op)
    }

    /// The position of the record's latest op when it may still gather changes:
    /// never sent, and not full.
    fn gathering(&self, table: &str, id: &str) -> Option<usize> {
        let position = self
            .ops
            .iter()
            .rposition(|queued| queued.op.table == table && queued.op.id == id)?;
        let queued = &self.ops[position];
        (!queued.sent && queued.op.changes.len() < MAX_CHANGES_PER_OP).then_some(position)
    }

    /// The oldest `max` ops, marked sent, for one push message.
    pub fn next_batch(&mut self, max: usize) -> Vec<PushOp> {
        self.next_batch_where(max, |_| true)
    }

    /// The oldest `max` ops of the tables `admit` lets through, marked sent.
    /// Each record's ops keep their order: a record's ops all pass or all wait.
    pub fn next_batch_where(&mut self, max: usize, admit: impl Fn(&str) -> bool) -> Vec<PushOp> {
        self.ops
            .iter_mut()
            .filter(|queued| admit(&queued.op.table))
            .take(max)
            .map(|queued| {
                queued.sent = true;
                queued.op.clone()
            })
            .collect()
    }

    /// Ops of the tables `admit` lets through.
    pub fn count_where(&self, admit: impl Fn(&str) -> bool) -> usize {
        self.ops
            .iter()
            .filter(|queued| admit(&queued.op.table))
            .count()
    }

    /// Removes the op with this id; returns it.
    pub fn remove(&mut self, op: &str) -> Option<QueuedOp> {
        let position = self.ops.iter().position(|queued| queued.op.op == op)?;
        self.ops.remove(position)
    }

    /// Removes every op of the record; returns them, oldest first.
    pub fn remove_record(&mut self, table: &str, id: &str) -> Vec<QueuedOp> {
        let (removed, kept) = std::mem::take(&mut self.ops)
            .into_iter()
            .partition(|queued| queued.op.table == table && queued.op.id == id);
        self.ops = kept;
        removed.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_changes_to_one_record_share_an_unsent_op() {
        let mut queue = WriteQueue::new("a");
        let first = queue.enqueue("t", "r1", vec![1], 10).expect("room");
        let second = queue.enqueue("t", "r1", vec![2], 10).expect("room");
        assert_eq!(first, second);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.ops[0].op.changes.len(), 2);
    }

    #[test]
    fn a_sent_op_gathers_nothing_more_so_its_retry_is_identical() {
        let mut queue = WriteQueue::new("a");
        let first = queue.enqueue("t", "r1", vec![1], 10).expect("room");
        let sent = queue.next_batch(10);
        let second = queue.enqueue("t", "r1", vec![2], 10).expect("room");
        assert_ne!(first, second);
        assert_eq!(queue.ops[0].op, sent[0]);
        assert_eq!(queue.ops[0].op.changes.len(), 1);
    }

    #[test]
    fn a_full_queue_refuses_a_new_op_but_gathers_into_an_open_one() {
        let mut queue = WriteQueue::new("a");
        queue.enqueue("t", "r1", vec![1], 1).expect("room");
        assert!(matches!(
            queue.enqueue("t", "r2", vec![2], 1),
            Err(WriteError::QueueFull { limit: 1 })
        ));
        assert!(queue.enqueue("t", "r1", vec![3], 1).is_ok());
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn removing_a_record_keeps_the_others_in_order() {
        let mut queue = WriteQueue::new("a");
        for (n, id) in ["r1", "r2", "r1", "r3"].into_iter().enumerate() {
            queue.next_batch(n);
            queue.enqueue("t", id, vec![0], 10).expect("room");
        }
        let removed = queue.remove_record("t", "r1");
        assert_eq!(removed.len(), 2);
        let left: Vec<&str> = queue
            .ops
            .iter()
            .map(|queued| queued.op.id.as_str())
            .collect();
        assert_eq!(left, ["r2", "r3"]);
    }
}
