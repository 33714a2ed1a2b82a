//! Webhooks to the owner's services (CONTRACT section 6, `spec/webhooks.md`).

pub mod deliver;
pub mod endpoint;
pub mod figures;
pub mod listen;
pub mod payload;
pub mod probe;
pub mod sign;
