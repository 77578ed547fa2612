//! Invalidations: commits by any process become [`CommitEvent`]s, published in
//! commit order, and only then reported by `last_tid()`.
//!
//! A background thread LISTENs on the schema's channel (every commit NOTIFYs it,
//! inside its transaction, so the notification arrives once the commit is
//! visible) and reads `transactions` with `tid > published` when woken, or every
//! `poll_interval` when no notification came (a lost connection, a missed
//! wake-up). A local commit publishes its own event at finish, so `finish`
//! returns with `last_tid()` at its tid.
//!
//! Invariants:
//! - `Shared::published` is held while events are published and `last_tid` is
//!   advanced: each event is published once, in tid order.
//! - Each event's oids leave the object cache before `last_tid` reaches its
//!   tid, so a load at a snapshot `last_tid` reported never finds them stale.
//! - Commits become visible in tid order (the `head` row lock), so reading
//!   `tid > published` never skips one.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::Type;

use super::conn::{self, source_text};
use super::{Shared, encode};
use crate::error::Result;
use crate::ids::{Oid, Tid};
use crate::meta::CommitEvent;

/// Transactions one catch-up query reads.
const CATCH_UP_PAGE: i64 = 1000;
/// Longest wait for a notification before checking whether the storage closed.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// The NOTIFY channel of a schema.
pub(crate) fn channel(schema: &str) -> String {
    format!("zodiac_{schema}")
}

/// Starts the poller thread; it ends when the storage closes or is dropped.
pub(crate) fn start(shared: &Arc<Shared>) -> Result<JoinHandle<()>> {
    let mut client = listen(shared)?;
    let weak = Arc::downgrade(shared);
    let name = format!("zodiac-pg-poll {}", shared.options.schema);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || run(&weak, &mut client))
        .map_err(|e| shared.error(format!("cannot start the invalidation poller: {e}")))
}

fn listen(shared: &Shared) -> Result<Client> {
    let mut client = conn::connect(&shared.options, &shared.describe)?;
    client
        .batch_execute(&format!("LISTEN {}", channel(&shared.options.schema)))
        .map_err(|e| conn::failure(&shared.describe, "cannot LISTEN for commits", &e))?;
    Ok(client)
}

fn run(weak: &Weak<Shared>, client: &mut Client) {
    let mut since_poll = Duration::ZERO;
    loop {
        let Some(shared) = weak.upgrade() else { return };
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        let woken = wait(client);
        since_poll += WAIT_SLICE;
        if !(woken || since_poll >= shared.options.poll_interval || client.is_closed()) {
            continue;
        }
        since_poll = Duration::ZERO;
        if client.is_closed() {
            match listen(&shared) {
                Ok(fresh) => *client = fresh,
                Err(e) => {
                    log::warn!("{e}; retrying");
                    drop(shared);
                    std::thread::sleep(WAIT_SLICE);
                    continue;
                }
            }
        }
        if let Err(e) = catch_up_on(&shared, client, None) {
            log::warn!(
                "{}: polling for commits failed: {}",
                shared.describe,
                source_text(&e)
            );
        }
    }
}

/// Waits up to [`WAIT_SLICE`] for a notification; drains every one waiting.
fn wait(client: &mut Client) -> bool {
    let mut notifications = client.notifications();
    let woken = matches!(notifications.timeout_iter(WAIT_SLICE).next(), Ok(Some(_)));
    if woken {
        while let Ok(Some(_)) = notifications.iter().next() {}
    }
    woken
}

/// Publishes a local commit `tid` (writing `oids`) whose predecessor was
/// `previous`; reads whatever else is missing first.
pub(crate) fn publish_commit(
    shared: &Shared,
    previous: Tid,
    tid: Tid,
    oids: Vec<Oid>,
) -> Result<()> {
    let mut published = shared.published.lock();
    if *published >= tid {
        return Ok(());
    }
    if *published == previous {
        publish(shared, &mut published, tid, oids.into());
        return Ok(());
    }
    drop(published);
    conn::with_read(shared, "reading commits", |c| {
        catch_up_on(shared, c, Some(tid))
    })
}

fn publish(shared: &Shared, published: &mut Tid, tid: Tid, oids: Arc<[Oid]>) {
    // The cache forgets the objects before `last_tid` says they changed.
    shared.cache.lock().invalidate(tid, Arc::clone(&oids));
    shared.notifier.publish(&CommitEvent { tid, oids });
    *published = tid;
    shared.last_tid.fetch_max(tid.0, Ordering::AcqRel);
}

/// Publishes every transaction after the published tid (up to `until` when given,
/// which must then be committed).
fn catch_up_on(
    shared: &Shared,
    client: &mut Client,
    until: Option<Tid>,
) -> Result<(), postgres::Error> {
    let mut published = shared.published.lock();
    loop {
        if until.is_some_and(|u| *published >= u) {
            return Ok(());
        }
        // Typed parameters: one round trip, no separate prepare (this runs
        // after every commit of every process).
        let rows = client.query_typed(
            "SELECT t.tid, coalesce(array_agg(r.oid ORDER BY r.oid) FILTER (WHERE r.oid IS NOT NULL), '{}') \
             FROM transactions t LEFT JOIN revisions r ON r.tid = t.tid \
             WHERE t.tid > $1 GROUP BY t.tid ORDER BY t.tid LIMIT $2",
            &[
                (&encode::tid(*published), Type::INT8),
                (&CATCH_UP_PAGE, Type::INT8),
            ],
        )?;
        if rows.is_empty() {
            return Ok(());
        }
        for row in &rows {
            let tid = Tid(row.get::<_, i64>(0) as u64);
            let oids: Vec<i64> = row.get(1);
            let oids: Arc<[Oid]> = oids.into_iter().map(|o| Oid(o as u64)).collect();
            publish(shared, &mut published, tid, oids);
        }
        if (rows.len() as i64) < CATCH_UP_PAGE && until.is_none_or(|u| *published >= u) {
            return Ok(());
        }
    }
}
