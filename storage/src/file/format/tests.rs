//! Unit tests of the record encoding and decoding.

use super::*;

fn sample(pos: u64) -> Vec<u8> {
    let mut meta = TransactionMeta::described("desc");
    meta.user = "alice".into();
    meta.extension.insert("k".into(), b"v".to_vec());
    let objects = [
        DataToWrite {
            oid: Oid(1),
            prev: 0,
            data: b"hello",
        },
        DataToWrite {
            oid: Oid(2),
            prev: 0,
            data: b"",
        },
    ];
    encode_transaction(pos, Tid(77), 3, &meta, &objects).0
}

#[test]
fn a_transaction_round_trips() {
    let mut file = vec![0u8; 48];
    file.extend(sample(48));
    let t = transaction_at(&file, 48).expect("valid");
    assert_eq!(t.tid, Tid(77));
    assert_eq!(t.meta().user, "alice");
    assert_eq!(t.meta().description, "desc");
    assert_eq!(t.meta().extension["k"], b"v");
    assert_eq!(t.records.len(), 2);
    assert_eq!(t.records[0].1.data, b"hello");
    assert_eq!(t.records[1].1.oid, Oid(2));
    assert_eq!(length_before(&file, t.end()), Some(t.len));
}

#[test]
fn every_single_byte_flip_is_detected() {
    let mut file = vec![0u8; 48];
    file.extend(sample(48));
    for i in 48..file.len() {
        let mut damaged = file.clone();
        damaged[i] ^= 0x40;
        assert!(
            transaction_at(&damaged, 48).is_err(),
            "flip at {i} not detected"
        );
    }
}

#[test]
fn every_truncation_is_detected() {
    let mut file = vec![0u8; 48];
    file.extend(sample(48));
    for cut in 48..file.len() {
        assert!(
            transaction_at(&file[..cut], 48).is_err(),
            "cut at {cut} not detected"
        );
    }
}

#[test]
fn a_stamped_durable_lag_is_read_back_with_a_valid_checksum() {
    let mut meta = TransactionMeta::described("desc");
    meta.user = "alice".into();
    let objects = [DataToWrite {
        oid: Oid(1),
        prev: 0,
        data: &[9; 1000],
    }];
    let pos = 5000;
    let mut e = encode_stampable(pos, Tid(77), 3, &meta, &objects);
    let mut file = vec![0u8; pos as usize];
    file.extend(&e.bytes);
    assert_eq!(transaction_at(&file, pos).unwrap().durable_mark(), pos);
    stamp_durable_lag(&mut e.bytes, durable_lag(pos, 48), e.body_crc);
    file.truncate(pos as usize);
    file.extend(&e.bytes);
    let t = transaction_at(&file, pos).expect("valid after the stamp");
    assert_eq!((t.durable_lag, t.durable_mark()), (4952, 48));
    assert_eq!(t.records[0].1.data, [9; 1000]);
}

#[test]
fn a_durable_lag_too_large_saturates_to_claim_less() {
    assert_eq!(durable_lag(10 << 32, 0), u32::MAX);
    assert_eq!(durable_lag(100, 40), 60);
    assert_eq!(durable_lag(100, 100), 0);
}

#[test]
fn versions_1_and_2_are_read_and_others_refused() {
    for version in [1, 2] {
        let h = FileHeader {
            version,
            file_id: 9,
            data_start: 48,
        };
        assert_eq!(FileHeader::decode(&h.encode()).unwrap(), h);
    }
    let h = FileHeader {
        version: 3,
        file_id: 9,
        data_start: 48,
    };
    let err = FileHeader::decode(&h.encode()).unwrap_err();
    assert!(err.contains("format version 3 is not supported"), "{err}");
}

#[test]
fn zeros_are_the_end() {
    let file = vec![0u8; 200];
    assert_eq!(transaction_at(&file, 48).unwrap_err(), RecordProblem::Zeros);
}

#[test]
fn header_round_trips_and_rejects_damage() {
    let h = FileHeader {
        version: FORMAT_VERSION,
        file_id: 9,
        data_start: 48,
    };
    let b = h.encode();
    assert_eq!(FileHeader::decode(&b).unwrap(), h);
    let mut bad = b;
    bad[20] ^= 1;
    assert!(FileHeader::decode(&bad).unwrap_err().contains("checksum"));
    assert!(
        FileHeader::decode(&b[..10])
            .unwrap_err()
            .contains("shorter")
    );
}
