//! Following the server's commits: invalidations applied in commit order, the
//! catch-up answer at connect, and the cache file that carries the cache across
//! runs.
//!
//! Invariants:
//! - Invalidations are applied in the order the server sends them (commit order):
//!   cache first, then subscribers, then `last_tid` (the ordering contract).
//! - An invalidation's chunks come whole and in order: a chunk of another tid
//!   inside one, more oids than a transaction may write, data before the last
//!   chunk, or a tid not above the cache's are protocol errors.
//! - A cache file is used only when the server's identity matches the one it was
//!   saved under and the catch-up from its tid works; otherwise the cache starts
//!   empty.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Inner;
use super::link::Link;
use crate::ids::{Oid, Tid};
use crate::meta::CommitEvent;
use crate::net::cache_file;
use crate::net::protocol::CatchUp;
use crate::pending::TRANSACTION_OBJECTS_MAX;

impl Inner {
    /// Applies the invalidation of `tid`: cache, subscribers, then `last_tid`,
    /// keeping the cached objects it carries the new `data` of current rather than
    /// dropping them.
    pub(super) fn apply(&self, tid: Tid, oids: Vec<Oid>, data: Vec<(u64, Vec<u8>)>) {
        let oids: Arc<[Oid]> = oids.into();
        self.cache
            .lock()
            .invalidate_updating(tid, Arc::clone(&oids), data);
        self.notifier.publish(&CommitEvent { tid, oids });
        self.set_published(tid);
    }

    pub(super) fn set_published(&self, tid: Tid) {
        self.published.store(tid.0, Ordering::Release);
        let _guard = self.published_lock.lock();
        self.published_changed.notify_all();
    }

    /// Waits until `last_tid() >= tid`, or the connection is lost.
    pub(super) fn wait_published(&self, tid: Tid, link: &Link) {
        let mut guard = self.published_lock.lock();
        while self.published.load(Ordering::Acquire) < tid.0
            && link.is_alive()
            && !self.closed.load(Ordering::Acquire)
        {
            self.published_changed
                .wait_for(&mut guard, Duration::from_millis(50));
        }
    }

    /// Starts the cache from the cache file, if there is one; a damaged file costs
    /// a warning and a cold start.
    pub(super) fn load_cache_file(&self) {
        let Some(path) = &self.options.cache_file else {
            return;
        };
        match cache_file::read(path) {
            Ok(None) => {}
            Ok(Some(saved)) => {
                let last_tid = saved.last_tid;
                self.cache.lock().preload(last_tid, saved.entries);
                *self.preloaded.lock() = Some(saved.identity);
                self.set_published(last_tid);
            }
            Err(what) => log::warn!(
                "{}: ignoring the cache file {}: {what}",
                self.address,
                path.display()
            ),
        }
    }

    /// Saves the cache to the cache file, if one is configured and the server's
    /// identity is known; a failure costs a warning (the next start is cold).
    pub(super) fn save_cache_file(&self) {
        let Some(path) = &self.options.cache_file else {
            return;
        };
        let identity = self.identity.load(Ordering::Acquire);
        if identity == 0 {
            return; // never connected, or a server whose storage has no identity
        }
        let saved = {
            let cache = self.cache.lock();
            cache_file::SavedCache {
                identity,
                last_tid: cache.last_tid,
                entries: cache.entries(),
            }
        };
        if let Err(e) = cache_file::write(path, &saved) {
            log::warn!(
                "{}: cannot save the cache file {}: {e}",
                self.address,
                path.display()
            );
        }
    }

    /// Applies the server's catch-up answer for a cache kept in memory across a
    /// reconnect (`last_tid`: where the cache was; `server_tid`: the server's).
    pub(super) fn caught_up(&self, catch_up: CatchUp, last_tid: Tid, server_tid: Tid) {
        match catch_up {
            CatchUp::Equal | CatchUp::Behind => {}
            CatchUp::Fresh => self.reset(server_tid, false),
            CatchUp::TooFar => {
                log::warn!(
                    "{}: this client missed more transactions than the server keeps \
                     (last seen {last_tid}, server at {server_tid}): dropping the whole cache; \
                     subscribers miss those transactions",
                    self.address
                );
                self.reset(server_tid, true);
            }
            CatchUp::Ahead => {
                log::warn!(
                    "{}: this client has seen transaction {last_tid} but the server's last is \
                     {server_tid}: the server's data was restored from an older copy; dropping \
                     the whole cache and following the server",
                    self.address
                );
                self.reset(server_tid, true);
            }
        }
    }

    /// Drops the cache and follows the server from `tid`. With `missed`, the
    /// commits in between are unknown: every subscriber is cut off (its
    /// `CommitSubscription::missed` says so) before `last_tid` moves, so a cache
    /// above this storage is cleared too.
    pub(super) fn reset(&self, tid: Tid, missed: bool) {
        self.cache.lock().reset(tid);
        if missed {
            self.notifier.cut_off_all();
        }
        self.set_published(tid);
    }

    pub(super) fn on_invalidation(
        &self,
        partial: &mut Option<(Tid, Vec<Oid>)>,
        tid: Tid,
        oids: Vec<u64>,
        complete: bool,
        data: Vec<(u64, Vec<u8>)>,
    ) -> std::result::Result<(), String> {
        let (ptid, acc) = partial.get_or_insert_with(|| (tid, Vec::new()));
        if *ptid != tid {
            return Err(format!("invalidation of {tid} inside the one of {ptid}"));
        }
        if acc.len() + oids.len() > TRANSACTION_OBJECTS_MAX {
            return Err("an invalidation of more objects than a transaction may write".into());
        }
        acc.extend(oids.into_iter().map(Oid));
        if complete {
            let (tid, oids) = partial.take().expect("set above");
            if tid <= self.cache.lock().last_tid {
                return Err(format!("invalidation of {tid} out of commit order"));
            }
            self.apply(tid, oids, data);
        } else if !data.is_empty() {
            return Err(format!("invalidation data of {tid} before its last chunk"));
        }
        Ok(())
    }
}
