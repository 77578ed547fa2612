//! The checks of the storage's decoders: the data file (`file`), the wire protocol
//! (`net`) and the two ends of a connection (`peers`), with the encodings they are
//! seeded with (`encodings`).

pub mod encodings;
pub mod file;
pub mod net;
pub mod peers;
