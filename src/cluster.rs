//! Several nodes behind one load balancer, sharing a NATS JetStream stream.
//!
//! The stream is the cluster's log. A node that takes a write checks it and
//! makes its automerge changes without storing them, publishes them to the
//! stream (the last change's hash is the message id, so a retried write is
//! stored once), and stores them when they come back; every node applies the
//! whole stream in stream order, its own writes included. A change therefore
//! gets the same sequence number on every node, and a client's cursor means
//! the same thing whichever node it next talks to. `docs/CLUSTER.md` has the
//! model and its guarantees.
//!
//! - [`Cluster::join`] connects, creates the stream if it is missing,
//!   attaches the sequencer to the database and starts the node's tasks:
//!   the publisher, the applier (an ordered consumer from the node's last
//!   applied position), the heartbeat that announces the node and reads the
//!   stream's state, and anti-entropy.
//! - [`ClusterStatus`] is what `/health` shows: peers, stream position,
//!   applied position, lag.

mod message;
mod node;
mod progress;
mod repair;

pub use message::WireWrite;
pub use node::{Cluster, ClusterError, ClusterStatus, PeerStatus};
pub use repair::{HeadsPage, RecordHeads, RepairReport, answer_sync, heads_page};
