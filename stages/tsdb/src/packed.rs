//! The block chunk encoding ("packed"): long per-series runs of samples
//! encoded column-wise and then entropy-coded with zstd, used when blocks are
//! written (head cuts and compactions), where the head's Gorilla chunks are
//! re-encoded once for much smaller files.
//!
//! Two columns, each a zstd frame of its own in the block's
//! `ENC_PACKED_SPLIT` chunks (so a timestamp column can be shared by every
//! series scraped at the same moments; see `block.rs`), or one frame holding
//! both in the older `ENC_PACKED` chunks, still read.
//!
//! Timestamp column: `n:uvarint`, timestamps as `t0:varint`,
//! `t1-t0:varint`, then delta-of-deltas as varints. Value column: a mode
//! byte, then:
//!
//! - `2` decimal planes: every value is exactly `m / 10^e` for integers `m`
//!   (|m| < 2^53) and one exponent `e` (0..=15); stored as `e:u8 width:u8`
//!   and the zigzagged deltas of `m` as `width` byte planes (all low bytes,
//!   then all second bytes, …). Counters and gauges with a few decimals land
//!   here; the check is bit-exact, so nothing is rounded. (`0`, the same
//!   deltas as varints, is still read.)
//! - `1` XOR: each value's bits XORed with the previous, as 8 little-endian
//!   bytes (zstd squeezes the zero bytes). Used whenever `0` cannot
//!   represent every value bit for bit (NaNs, stale markers, -0.0, infinities,
//!   long fractions).
//!
//! Frames are stored without a dictionary.

use crate::bits::{put_uvarint, put_varint, unzigzag, zigzag, DecodeError, Decoder};

/// Samples per packed chunk: long enough for the entropy coder to find the
/// patterns, short enough that a narrow range query decodes little.
pub const SAMPLES_PER_PACKED_CHUNK: usize = 1920;

const MODE_DECIMAL: u8 = 0;
const MODE_XOR: u8 = 1;
const MODE_DECIMAL_PLANES: u8 = 2;
const ZSTD_LEVEL: i32 = 3;

/// Exact powers of ten (all representable exactly as f64).
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];
const MAX_EXACT: f64 = 9_007_199_254_740_992.0; // 2^53

/// A packed chunk could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum PackedError {
    #[error("zstd: {0}")]
    Zstd(#[from] std::io::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("unknown value mode {0}")]
    Mode(u8),
}

fn decimal_mantissa(v: f64, e: usize) -> Option<i64> {
    if !v.is_finite() || (v == 0.0 && v.is_sign_negative()) {
        return None;
    }
    let m = (v * POW10[e]).round();
    if m.abs() >= MAX_EXACT {
        return None;
    }
    // Bit-exact round trip or nothing.
    ((m / POW10[e]).to_bits() == v.to_bits()).then_some(m as i64)
}

/// The smallest exponent that represents every value exactly, if any.
fn common_exponent(values: &[f64]) -> Option<usize> {
    let mut e = 0usize;
    for &v in values {
        while decimal_mantissa(v, e).is_none() {
            e += 1;
            if e >= POW10.len() {
                return None;
            }
        }
    }
    // A larger exponent chosen for a later value must still hold for the
    // earlier ones.
    values
        .iter()
        .all(|&v| decimal_mantissa(v, e).is_some())
        .then_some(e)
}

/// The raw (uncompressed) timestamp column of sorted samples: `n:uvarint`,
/// `t0:varint`, `t1-t0:varint`, then delta-of-deltas as varints.
pub fn timestamp_column(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(samples.len() + 16);
    put_uvarint(&mut raw, samples.len() as u64);
    let mut prev_t = 0i64;
    let mut prev_d = 0i64;
    for (i, &(t, _)) in samples.iter().enumerate() {
        match i {
            0 => put_varint(&mut raw, t),
            1 => {
                prev_d = t.wrapping_sub(prev_t);
                put_varint(&mut raw, prev_d);
            }
            _ => {
                let d = t.wrapping_sub(prev_t);
                put_varint(&mut raw, d.wrapping_sub(prev_d));
                prev_d = d;
            }
        }
        prev_t = t;
    }
    raw
}

/// Appends the raw value column (mode byte and data) of `samples`.
fn put_value_column(raw: &mut Vec<u8>, samples: &[(i64, f64)]) {
    let values: Vec<f64> = samples.iter().map(|s| s.1).collect();
    match common_exponent(&values) {
        Some(e) => {
            // Byte planes of the zigzagged mantissa deltas: all low bytes,
            // then all second bytes, … so the entropy coder sees one
            // distribution per plane instead of a mix.
            let mut prev = 0i64;
            let deltas: Vec<u64> = values
                .iter()
                .map(|&v| {
                    let m = decimal_mantissa(v, e).unwrap_or(0);
                    let d = zigzag(m.wrapping_sub(prev));
                    prev = m;
                    d
                })
                .collect();
            let max = deltas.iter().copied().max().unwrap_or(0);
            let width = (8 - max.leading_zeros() as usize / 8).max(1);
            raw.push(MODE_DECIMAL_PLANES);
            raw.push(e as u8);
            raw.push(width as u8);
            for plane in 0..width {
                raw.extend(deltas.iter().map(|d| (d >> (plane * 8)) as u8));
            }
        }
        None => {
            raw.push(MODE_XOR);
            let mut prev = 0u64;
            for &v in &values {
                raw.extend_from_slice(&(v.to_bits() ^ prev).to_le_bytes());
                prev = v.to_bits();
            }
        }
    }
}

/// The raw value column of `samples` (its length is the timestamp column's).
pub fn value_column(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(samples.len() * 2 + 8);
    put_value_column(&mut raw, samples);
    raw
}

/// zstd-compresses one column.
pub fn compress(raw: &[u8]) -> Vec<u8> {
    // Compression of an in-memory buffer cannot fail short of allocation
    // failure; the reader then sees a frame error, not wrong data.
    zstd::bulk::compress(raw, ZSTD_LEVEL).unwrap_or_default()
}

/// Decompresses one zstd frame.
pub fn decompress(frame: &[u8]) -> Result<Vec<u8>, PackedError> {
    let size = zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
        .unwrap_or(1 << 20)
        .min(64 << 20) as usize;
    Ok(zstd::bulk::decompress(frame, size)?)
}

/// Encodes sorted samples into one single-frame packed chunk (timestamps
/// then values in one zstd frame).
pub fn encode(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut raw = timestamp_column(samples);
    put_value_column(&mut raw, samples);
    compress(&raw)
}

/// Reads a raw timestamp column from `d`.
fn read_timestamps(d: &mut Decoder) -> Result<Vec<i64>, PackedError> {
    let n = d.uvarint()? as usize;
    // Each timestamp takes at least one byte, so `n` is bounded by the
    // input: a corrupt count cannot make us allocate wildly.
    if n > d.remaining() {
        return Err(DecodeError {
            offset: 0,
            what: "sample count exceeds data",
        }
        .into());
    }
    let mut ts = Vec::with_capacity(n);
    let mut t = 0i64;
    let mut delta = 0i64;
    for i in 0..n {
        match i {
            0 => t = d.varint()?,
            1 => {
                delta = d.varint()?;
                t = t.wrapping_add(delta);
            }
            _ => {
                delta = delta.wrapping_add(d.varint()?);
                t = t.wrapping_add(delta);
            }
        }
        ts.push(t);
    }
    Ok(ts)
}

/// Decodes a compressed timestamp column.
pub fn decode_timestamps(frame: &[u8]) -> Result<Vec<i64>, PackedError> {
    let raw = decompress(frame)?;
    let mut d = Decoder::new(&raw);
    read_timestamps(&mut d)
}

/// Reads a raw value column for timestamps `ts`, pairing them into `out`.
fn read_values(d: &mut Decoder, ts: &[i64], out: &mut Vec<(i64, f64)>) -> Result<(), PackedError> {
    let n = ts.len();
    if n == 0 {
        return Ok(());
    }
    out.reserve(n);
    match d.u8()? {
        MODE_DECIMAL => {
            let e = d.u8()? as usize;
            if e >= POW10.len() {
                return Err(PackedError::Mode(MODE_DECIMAL));
            }
            let mut m = 0i64;
            for &t in ts {
                m = m.wrapping_add(d.varint()?);
                out.push((t, m as f64 / POW10[e]));
            }
        }
        MODE_DECIMAL_PLANES => {
            let e = d.u8()? as usize;
            let width = d.u8()? as usize;
            if e >= POW10.len() || !(1..=8).contains(&width) {
                return Err(PackedError::Mode(MODE_DECIMAL_PLANES));
            }
            let planes = d.take(width * n)?;
            let mut m = 0i64;
            for (i, &t) in ts.iter().enumerate() {
                let mut z = 0u64;
                for plane in 0..width {
                    z |= (planes[plane * n + i] as u64) << (plane * 8);
                }
                m = m.wrapping_add(unzigzag(z));
                out.push((t, m as f64 / POW10[e]));
            }
        }
        MODE_XOR => {
            let mut prev = 0u64;
            for &t in ts {
                let bits = d.u64_le()? ^ prev;
                out.push((t, f64::from_bits(bits)));
                prev = bits;
            }
        }
        other => return Err(PackedError::Mode(other)),
    }
    Ok(())
}

/// Decodes a compressed value column for the timestamps `ts` into `out`.
pub fn decode_values(
    frame: &[u8],
    ts: &[i64],
    out: &mut Vec<(i64, f64)>,
) -> Result<(), PackedError> {
    let raw = decompress(frame)?;
    read_values(&mut Decoder::new(&raw), ts, out)
}

/// Decodes a single-frame packed chunk.
pub fn decode(bytes: &[u8]) -> Result<Vec<(i64, f64)>, PackedError> {
    let raw = decompress(bytes)?;
    let mut d = Decoder::new(&raw);
    let ts = read_timestamps(&mut d)?;
    let mut out = Vec::new();
    read_values(&mut d, &ts, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use panoptes_model::STALE_NAN_BITS;
    use proptest::prelude::*;

    fn round_trip(samples: &[(i64, f64)]) {
        let got = decode(&encode(samples)).unwrap();
        let a: Vec<(i64, u64)> = samples.iter().map(|s| (s.0, s.1.to_bits())).collect();
        let b: Vec<(i64, u64)> = got.iter().map(|s| (s.0, s.1.to_bits())).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn decimal_values_are_exact() {
        let s: Vec<(i64, f64)> = (0..500)
            .map(|i| (i * 15_000 + i % 3, 0.1 * i as f64 + 1e6))
            .collect();
        round_trip(&s);
        round_trip(&[(1, 0.1), (2, 0.2), (3, 0.30000000000000004), (4, 1e-15)]);
        round_trip(&[(1, 1e300), (2, -5.5), (3, 2.0f64.powi(60))]);
    }

    #[test]
    fn specials_fall_back_to_xor() {
        round_trip(&[
            (1, 1.0),
            (2, f64::from_bits(STALE_NAN_BITS)),
            (3, -0.0),
            (4, f64::NAN),
            (5, f64::INFINITY),
            (6, std::f64::consts::PI),
        ]);
        round_trip(&[]);
        round_trip(&[(7, 1.0)]);
    }

    #[test]
    fn counters_pack_far_below_a_byte_per_sample() {
        let s: Vec<(i64, f64)> = (0..1920)
            .map(|i| (1_700_000_000_000 + i * 10_000, (i * 3) as f64))
            .collect();
        let n = encode(&s).len();
        assert!(n < 1920 / 4, "{n} bytes");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"not zstd at all").is_err());
        let bad = zstd::bulk::compress(&[0xff, 0xff, 0xff, 0xff, 0x0f], 1).unwrap();
        assert!(decode(&bad).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_samples_round_trip(
            start in any::<i64>(),
            gaps in proptest::collection::vec(1i64..1_000_000, 0..300),
            bits in proptest::collection::vec(any::<u64>(), 301),
            decimals in proptest::collection::vec(-100_000i64..100_000, 301),
            use_decimal in any::<bool>(),
        ) {
            let mut t = start / 2;
            let mut s = Vec::new();
            for i in 0..=gaps.len() {
                if i > 0 { t += gaps[i - 1]; }
                let v = if use_decimal { decimals[i] as f64 / 100.0 } else { f64::from_bits(bits[i]) };
                s.push((t, v));
            }
            round_trip(&s);
        }
    }
}
