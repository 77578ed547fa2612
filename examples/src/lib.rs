//! Examples of applications built on Zodiac; the code is in `examples/`, one file
//! per example, each run with `cargo run -p zodiac-examples --example NAME`:
//!
//! - `embedded_app`: an application on its own data file, with a typed job handler
//!   that increments a persistent counter in the job's transaction.
//! - `server_and_workers`: a server in-process and two worker processes that run
//!   the jobs the application puts.
//! - `custom_retry_policy`: a retry policy of the application's own, registered by
//!   name, retrying a flaky handler a fixed number of times.
//!
//! This library holds nothing else: the package exists for its examples.
