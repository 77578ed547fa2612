//! The persistence layer of Zodiac (not built yet).
//!
//! This crate will hold databases, connections and transactions over any
//! [`zodiac_storage`] storage: typed persistent objects encoded with serde and
//! postcard, lazy typed references, a per-connection object cache with
//! invalidation at transaction boundaries, conflict retry and three-way
//! conflict resolution, and scalable persistent collections (B-trees and a
//! conflict-free counter). Until then it deliberately exports nothing.
