//! How messages reach the server: the [`Transport`] trait and its in-process
//! implementation. [`SimulatedNetwork`](crate::client::SimulatedNetwork) wraps
//! any transport with latency, bandwidth and faults.

use std::future::Future;
use std::sync::Arc;

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
#[derive(Clone, Debug)]
pub struct InProcess {
    server: SyncServer,
    access: Arc<dyn RowAccess>,
}

impl InProcess {
    /// The server, answering with full access to every row.
    pub fn new(server: SyncServer) -> InProcess {
        InProcess::with_access(server, Arc::new(FullAccess))
    }

    /// The server, answering as a caller who sees only the rows `access` admits.
    pub fn with_access(server: SyncServer, access: Arc<dyn RowAccess>) -> InProcess {
        InProcess { server, access }
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
        async move {
            tokio::task::spawn_blocking(move || server.handle_as(access.as_ref(), &request))
                .await
                .map_err(TransportError::ServerTask)
        }
    }
}
