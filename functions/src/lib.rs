//! Floe's functions: what the binaries in `src/bin/` share. Each binary
//! adapts one event source to `floe-core` and holds no logic of its own.
//!
//! | module | what it adapts |
//! |---|---|
//! | [`env`] | `FLOE_*` settings and tracing, read once at start |
//! | [`serve`] | the HTTP router on a socket, with the background indexer (`floe serve`) |
//! | [`cli`] | the `floe` command line |
//! | [`http`] | API Gateway events → the router (the ingest and query functions) |
//! | [`indexer`] | S3 object-created and scheduled events → index builds and maintenance rounds |

pub mod cli;
pub mod env;
pub mod http;
pub mod indexer;
pub mod serve;
