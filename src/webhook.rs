//! Outgoing webhooks: notifying user-registered HTTP endpoints of changes.
//!
//! - [`sign`]: Standard Webhooks signing of deliveries (and the matching receiver-side check).
//! - [`dispatch`]: [`Webhooks`], the registered endpoints and one delivery worker each:
//!   in order, at least once, with backoff; the delivery log; replay.
//! - [`endpoint`]: an endpoint's settings, kept with the data.
//! - [`guard`]: the SSRF guard every user-supplied webhook URL and delivery goes through.

pub mod dispatch;
pub mod endpoint;
pub mod guard;
pub mod sign;

pub use dispatch::{
    Delivery, EndpointUpdate, EndpointView, NewEndpoint, Outcome, WebhookError, Webhooks,
};
pub use endpoint::Endpoint;
