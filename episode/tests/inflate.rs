//! The bound on what Automerge bytes may inflate to: real documents pass, and the
//! walker really reads their deflated columns; hand-made bombs are refused before
//! Automerge inflates them.

use std::io::Write;

use automerge::ActorId;
use episode::document::{DocumentError, EpisodeDoc, Opening};
use episode::inflate::{MAX_INFLATED_BYTES, exceeds, exceeds_cap};
use episode::{Pathway, PatientRef};

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn uleb(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, kind];
    uleb(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

fn a_document_with_a_long_plan() -> Vec<u8> {
    let opening = Opening {
        id: uuid::Uuid::from_u128(42).into(),
        patient_ref: PatientRef::new("RX-INFLATE-1").unwrap(),
        team: "north".into(),
        opened_at: "2026-03-02T09:00:00Z".parse().unwrap(),
        opened_by: "u-asha".into(),
        pathway: Pathway::RoutineReferral,
        facts: Vec::new(),
        plan: "Visit on Monday with the named contact; leave a card if there is no answer. ".repeat(400),
    };
    EpisodeDoc::open(&opening, ActorId::random()).unwrap().save()
}

#[test]
fn a_real_document_passes_and_its_deflated_columns_are_read() {
    let bytes = a_document_with_a_long_plan();
    assert!(!exceeds_cap(&bytes));
    assert!(EpisodeDoc::load(&bytes, ActorId::random()).is_ok());
    // The plan's 30,800 characters (within its limit) are in a deflated column: with a
    // small cap the walker finds and inflates it, so it reads real documents' layout.
    assert!(bytes.len() < 20_000, "the document is compressed ({} bytes)", bytes.len());
    assert!(exceeds(&bytes, 25_000));
}

#[test]
fn a_compressed_change_that_inflates_past_the_cap_is_refused() {
    let bomb = deflate(&vec![0u8; (MAX_INFLATED_BYTES + 1024) as usize]);
    let bytes = chunk(2, &bomb);
    assert!(bytes.len() < 200_000, "a small input ({} bytes)", bytes.len());
    assert!(exceeds_cap(&bytes));
    assert!(matches!(EpisodeDoc::load(&bytes, ActorId::random()), Err(DocumentError::Refused(_))));
}

#[test]
fn a_document_column_that_inflates_past_the_cap_is_refused() {
    let bomb = deflate(&vec![0u8; (MAX_INFLATED_BYTES + 1024) as usize]);
    let mut body = Vec::new();
    uleb(0, &mut body); // actors
    uleb(0, &mut body); // heads
    uleb(1, &mut body); // one change column, deflated
    uleb((1 << 4) | 0b1000, &mut body);
    uleb(bomb.len() as u64, &mut body);
    uleb(0, &mut body); // no op columns
    body.extend_from_slice(&bomb);
    let bytes = chunk(0, &body);
    assert!(exceeds_cap(&bytes));
    assert!(matches!(EpisodeDoc::load(&bytes, ActorId::random()), Err(DocumentError::Refused(_))));
}

#[test]
fn garbage_is_left_to_automerge_to_refuse() {
    for bytes in [vec![], vec![0x85, 0x6f, 0x4a, 0x83], vec![0xff; 64], chunk(0, &[0xff; 40])] {
        assert!(!exceeds_cap(&bytes));
        assert!(EpisodeDoc::load(&bytes, ActorId::random()).is_err());
    }
}
