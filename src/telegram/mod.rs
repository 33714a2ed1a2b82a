//! Everything that talks to the Telegram Bot API.

pub mod api;
pub mod pace;
pub mod poll;
pub mod progress;
pub mod render;
pub mod send;
pub mod update;
