//! Webhooks to the owner's services (CONTRACT section 6, `spec/webhooks.md`).

pub mod deliver;
pub mod endpoint;
pub mod payload;
pub mod sign;
