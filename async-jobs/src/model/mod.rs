//! The persistent records of the job layer, each with the invariants of its
//! stored form: jobs and their status machine, queues, quotas, dispatchers and
//! agents, the ended jobs of a queue, and the merge functions of the merging
//! ones. Records import nothing from the operations on them (`crate::queue`,
//! `crate::dispatcher`, `crate::run`, ...), which sit above.

pub mod attempt_limit;
pub mod dispatcher;
pub mod ended;
pub mod failure;
pub mod job;
pub mod merges;
pub mod queue;
pub mod queue_key;
pub mod quota;
pub mod retry_data;
pub mod schedule;
pub mod status;
pub mod unique;
