//! A bound on what Automerge bytes may inflate to, checked before Automerge reads them.
//!
//! A document's columns, and whole change chunks, may be deflated; Automerge inflates them
//! without a limit of its own, so a small hostile input could claim gigabytes. This walks
//! the chunk headers and the document column metadata (the storage format's layout), and
//! inflates each deflated part with a cap. What it cannot make sense of it leaves to
//! Automerge, which refuses malformed bytes itself: this only ever refuses bytes that
//! really inflate past the cap.

use std::io::Read;

/// The most bytes one input's deflated parts may inflate to, in all.
pub const MAX_INFLATED_BYTES: u64 = 64 * 1024 * 1024;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const DOCUMENT: u8 = 0;
const COMPRESSED: u8 = 2;
const DEFLATE_BIT: u64 = 0b1000;

/// Whether the deflated parts of `bytes` inflate to more than `MAX_INFLATED_BYTES`.
pub fn exceeds_cap(bytes: &[u8]) -> bool {
    exceeds(bytes, MAX_INFLATED_BYTES)
}

/// Whether the deflated parts of `bytes` inflate to more than `cap` bytes in all.
pub fn exceeds(bytes: &[u8], cap: u64) -> bool {
    let mut budget = cap;
    let mut rest = bytes;
    while rest.len() >= MAGIC.len() && rest.starts_with(&MAGIC) {
        let Some((kind, body, next)) = chunk(rest) else { return false };
        let over = match kind {
            COMPRESSED => inflate(body, &mut budget),
            DOCUMENT => document(body, &mut budget).unwrap_or(false),
            _ => false,
        };
        if over {
            return true;
        }
        rest = next;
    }
    false
}

/// One chunk: (type, body, what follows).
fn chunk(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let input = input.get(8..)?; // magic, checksum
    let (&kind, input) = input.split_first()?;
    let (length, input) = uleb(input)?;
    let length = usize::try_from(length).ok()?;
    (input.len() >= length).then(|| (kind, &input[..length], &input[length..]))
}

/// Inflates `data` against the budget; true when it runs past it.
fn inflate(data: &[u8], budget: &mut u64) -> bool {
    let mut sink = std::io::sink();
    let mut decoder = flate2::read::DeflateDecoder::new(data).take(*budget + 1);
    match std::io::copy(&mut decoder, &mut sink) {
        Ok(n) if n > *budget => true,
        Ok(n) => {
            *budget -= n;
            false
        }
        // Not deflate after all: Automerge will say what is wrong.
        Err(_) => false,
    }
}

/// A document chunk's body: actors, heads, change and op column metadata, then the
/// columns' data in that order.
fn document(body: &[u8], budget: &mut u64) -> Option<bool> {
    let (actors, mut input) = uleb(body)?;
    for _ in 0..actors {
        let (length, rest) = uleb(input)?;
        input = rest.get(usize::try_from(length).ok()?..)?;
    }
    let (heads, rest) = uleb(input)?;
    input = rest.get(usize::try_from(heads).ok()?.checked_mul(32)?..)?;
    let mut columns = Vec::new();
    for _ in 0..2 {
        let (count, rest) = uleb(input)?;
        input = rest;
        for _ in 0..count {
            let (spec, rest) = uleb(input)?;
            let (length, rest) = uleb(rest)?;
            input = rest;
            columns.push((spec, usize::try_from(length).ok()?));
        }
    }
    for (spec, length) in columns {
        let data = input.get(..length)?;
        input = &input[length..];
        if spec & DEFLATE_BIT != 0 && inflate(data, budget) {
            return Some(true);
        }
    }
    Some(false)
}

/// An unsigned LEB128 number (at most 10 bytes).
fn uleb(input: &[u8]) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (i, &byte) in input.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some((value, &input[i + 1..]));
        }
    }
    None
}
