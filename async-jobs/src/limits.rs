//! The named limits, defaults and reserved names of the job layer, in one place.
//!
//! Everything that can grow has a limit here, units last (`_MAX` counts, `_BYTES`
//! and `_CHARS` sizes); each is checked where the thing grows and refused with
//! [`Error::LimitExceeded`](crate::Error::LimitExceeded).

/// Limits of a job: handler name, annotations, callbacks, error history.
pub use crate::model::job::{
    ANNOTATION_BYTES_MAX, ANNOTATIONS_MAX, CALLBACKS_MAX, ERROR_HISTORY_MAX, HANDLER_NAME_BYTES_MAX,
};

/// The length of a failure's text.
pub use crate::model::failure::FAILURE_TEXT_CHARS_MAX;

/// Limits of a queue: its name, its quotas, one claim's scan and spread window.
pub use crate::model::queue::QUEUE_NAME_BYTES_MAX;
pub use crate::model::quota::QUOTAS_MAX;
pub use crate::queue::{CLAIM_SCAN_ENTRIES_MAX, SPREAD_WINDOW_PER_LANE};

/// Dispatchers and agents: limits and defaults.
pub use crate::dispatcher::{
    AGENT_NAME_BYTES_MAX, AGENT_SIZE_DEFAULT, AGENTS_MAX, CLAIM_SPREAD_ROTATION,
    DEATH_INTERVAL_DEFAULT, DISPATCHER_ID_BYTES_MAX, PING_INTERVAL_DEFAULT, RETENTION_DEFAULT,
    RETENTION_DROPS_MAX,
};

/// A worker's defaults: its agent's name, its identity file.
pub use crate::identity::{WORKER_ID_FILE_BYTES_MAX, WORKER_ID_PATH_DEFAULT};
pub use crate::worker::AGENT_NAME;

/// How long a batch's transaction takes further jobs.
pub use crate::run::BATCH_SPAN_MAX;

/// Reserved names: the root entry of the queues, the lanes of a queue's keys, the
/// handlers and annotation the job layer uses itself.
pub use crate::callbacks::BRANCH_HANDLER;
pub use crate::composite::{COMPOSITE_ANNOTATION, JOIN_HANDLER};
pub use crate::model::queue::{LANE_PUT_BACK, LANE_SCHEDULED, QUEUES_ROOT_KEY};
pub use crate::run::RESUME_HANDLER;

/// Priorities (0 highest, to `PRIORITY_MAX`) and the lanes of a queue's keys
/// (two per priority).
pub use crate::model::queue_key::{LANES, PRIORITY_MAX};

/// The most attempts a job's handler may be given, and the backtrace text an
/// error history entry keeps.
pub use crate::model::attempt_limit::ATTEMPTS_MAX;
pub use crate::model::job::ERROR_BACKTRACE_CHARS_MAX;

/// The most bytes of a unique key.
pub use crate::model::unique::UNIQUE_KEY_BYTES_MAX;

/// Recurring jobs: the root entry of the schedules, a schedule's name and cron
/// expression, how many a database holds, how many missed ticks one put counts.
pub use crate::model::schedule::{SCHEDULE_NAME_BYTES_MAX, SCHEDULES_MAX, SCHEDULES_ROOT_KEY};
pub use crate::schedule::{CRON_EXPRESSION_BYTES_MAX, MISSED_COUNTED_MAX, SCHEDULE_ANNOTATION};
