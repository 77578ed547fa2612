//! The durable job layer of Zodiac (not built yet).
//!
//! This crate will hold persistent jobs, queues, agents and dispatchers,
//! callbacks, scheduled jobs, retry policies, and dead-dispatcher detection
//! and recovery, all stored in a [`zodiac_objects`] database. Until then it
//! deliberately exports nothing.
