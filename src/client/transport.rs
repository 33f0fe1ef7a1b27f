//! How messages reach the server: the [`Transport`] trait and its in-process
//! implementation. [`SimulatedNetwork`](crate::client::SimulatedNetwork) wraps
//! any transport with latency, bandwidth and faults.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::client::error::TransportError;
use crate::engine::{FullAccess, RowAccess};
use crate::sync::SyncServer;

/// Carries one request message to the server and brings back its answer.
///
/// An implementation delivers the bytes as they are: a truncated or corrupted
/// answer is the client's to refuse (every message carries a length and a
/// checksum). It returns an error only when no answer arrived at all.
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` and waits for the answer.
    fn exchange(
        &self,
        request: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send;
}

impl<T: Transport> Transport for Arc<T> {
    fn exchange(
        &self,
        request: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send {
        T::exchange(self, request)
    }
}

/// A [`SyncServer`] in the same process. The server's work is synchronous and
/// CPU-bound, so each exchange runs it on a blocking thread.
///
/// A pull with `wait_ms` (a long poll) is held until a change comes, as over
/// HTTP, for at most [`InProcess::max_wait`] (default 5 minutes).
#[derive(Clone, Debug)]
pub struct InProcess {
    server: SyncServer,
    access: Arc<dyn RowAccess>,
    max_wait: Duration,
}

impl InProcess {
    /// The server, answering with full access to every row.
    pub fn new(server: SyncServer) -> InProcess {
        InProcess::with_access(server, Arc::new(FullAccess))
    }

    /// The server, answering as a caller who sees only the rows `access` admits.
    pub fn with_access(server: SyncServer, access: Arc<dyn RowAccess>) -> InProcess {
        InProcess {
            server,
            access,
            max_wait: Duration::from_secs(5 * 60),
        }
    }

    /// Holds long polls for at most `max_wait`.
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> InProcess {
        self.max_wait = max_wait;
        self
    }

    pub fn server(&self) -> &SyncServer {
        &self.server
    }
}

impl Transport for InProcess {
    fn exchange(
        &self,
        request: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send {
        let server = self.server.clone();
        let access = Arc::clone(&self.access);
        let max_wait = self.max_wait;
        async move { Ok(server.handle_waiting(access, request, max_wait).await) }
    }
}
