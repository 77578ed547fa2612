//! The file-I/O seam of the file storage, for embedders and tests: every byte a
//! [`FileStorage`](crate::FileStorage) reads or writes goes through a
//! [`FileIoFactory`] (given with [`FileOptions::io`](crate::FileOptions::io)).
//! [`StdFileIoFactory`] is the real file system (the default);
//! [`FaultyIoFactory`] fails a chosen write or sync, or leaves the file a power
//! cut would leave, so code built on Zodiac can test its own crash handling.

pub use crate::file::io::{
    FaultPlan, FaultPoint, FaultyIoFactory, FileIo, FileIoFactory, Hole, POWER_CUT_PAGE_BYTES,
    StdFileIoFactory,
};
