//! Entry points for the fuzz targets (`fuzz/`) and the decoder property tests: the
//! private decoders of a data file's opening scan and of the saved index, run over
//! bytes in memory exactly as an open runs them. Not part of the API (hidden from
//! the docs, no stability promise).
//!
//! Invariant: these functions only call the decoders and check what they return.
//! Bad input is an `Err`; they panic only where a decoder broke its own contract
//! (the scan indexed a record it cannot read back), which is the bug a fuzz target
//! looks for.

use crate::file::format::{self, FileHeader};
use crate::file::index::{self, Index};
use crate::file::recovery;
use crate::ids::Tid;

/// What the opening scan of a data file found.
#[derive(Debug, PartialEq, Eq)]
pub struct ScanSummary {
    /// Where the valid transactions end.
    pub end: u64,
    /// The last valid transaction's tid.
    pub last_tid: u64,
    /// The oid allocator's high-water mark the scan settled on.
    pub next_oid: u64,
    /// Transactions scanned.
    pub transactions: u64,
    /// Objects in the index the scan built.
    pub objects: u64,
    /// Where a bad tail starts, when there is one to cut.
    pub tail_at: Option<u64>,
}

/// Decodes `file` as a whole data file the way an open does: its header, then the
/// scan from its data start (tail or mid-file damage judged). Every index entry the
/// scan made must point at a data record of its object. `Err` says what was
/// refused.
pub fn scan_data_file(file: &[u8]) -> Result<ScanSummary, String> {
    let header = header_of(file)?;
    let mut index = Index::default();
    let outcome = recovery::scan(file, header.data_start, Tid::ZERO, 1, &mut index)
        .map_err(|damage| format!("damage at offset {}: {}", damage.offset, damage.what))?;
    for (oid, pos) in index.entries() {
        let record = format::data_record_at(file, pos)
            .map_err(|e| format!("the scan indexed a record it cannot read: {e}"))?;
        assert_eq!(record.oid, oid, "the scan indexed another object's record");
    }
    Ok(ScanSummary {
        end: outcome.end,
        last_tid: outcome.last_tid.0,
        next_oid: outcome.next_oid,
        transactions: outcome.transactions,
        objects: index.len(),
        tail_at: outcome.tail.map(|t| t.offset),
    })
}

/// Decodes `saved` as the saved index of the data file `data` and checks it
/// against that file, the way an open does before using it; the number of objects
/// it holds, or why it is ignored.
pub fn load_saved_index(saved: &[u8], data: &[u8]) -> Result<u64, String> {
    let header = header_of(data)?;
    if saved.len() as u64 > index::saved_len_max(data.len() as u64) {
        return Err("larger than an index of this data file can be".into());
    }
    let (claims, index) = index::decode_saved(saved)?;
    index::check_saved(&claims, &index, data, header.data_start)?;
    Ok(index.len())
}

/// The saved index an open of the valid data file `file` would write: its scan's
/// index, encoded (to seed the fuzz targets and property tests with a valid one).
pub fn saved_index_of(file: &[u8]) -> Result<Vec<u8>, String> {
    let header = header_of(file)?;
    let mut index = Index::default();
    let outcome = recovery::scan(file, header.data_start, Tid::ZERO, 1, &mut index)
        .map_err(|damage| format!("damage at offset {}: {}", damage.offset, damage.what))?;
    let claims = index::SavedIndexHeader {
        file_id: header.file_id,
        covered_end: outcome.end,
        last_tid: outcome.last_tid,
        next_oid: outcome.next_oid,
    };
    Ok(index::encode_saved(&claims, &index))
}

/// The header, checked as an open checks it: decoded, and its
/// data start inside the file.
fn header_of(file: &[u8]) -> Result<FileHeader, String> {
    let header = FileHeader::decode(file)?;
    if header.data_start > file.len() as u64 {
        return Err(format!(
            "data start {} lies beyond the end of the file ({} bytes)",
            header.data_start,
            file.len()
        ));
    }
    Ok(header)
}
