//! Client/server: a [`Server`] serves one storage over TCP to many
//! [`ClientStorage`]s, which implement the same `Storage` trait. The protocol is
//! specified in `docs/protocol.md`.

mod cache;
mod client;
pub mod protocol;
mod server;

pub use client::{ClientOptions, ClientStorage};
pub use server::{Server, ServerOptions};
