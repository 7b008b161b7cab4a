//! Gorilla-style XOR chunks: the compressed unit of sample storage in the
//! head and in blocks.
//!
//! Layout: two bytes (big endian) with the sample count, then a bit stream.
//! The first sample stores its timestamp as a varint and its value as 64 raw
//! bits; the second stores the timestamp delta as a varint and the value
//! XORed with the first; later samples store the delta-of-delta of the
//! timestamp in one of five buckets and the XOR of the value bits with the
//! previous value, reusing the previous window of meaningful bits when it
//! fits. XOR on the raw bit pattern makes every f64 round-trip exactly,
//! including NaN payloads such as the staleness marker.

use crate::bits::{BitReader, BitWriter, EndOfStream};

/// Samples per chunk before a new one is cut, as in Prometheus.
pub const SAMPLES_PER_CHUNK: u16 = 120;

/// A chunk could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk is shorter than its header")]
    TooShort,
    #[error("chunk data truncated: {0}")]
    Truncated(#[from] EndOfStream),
    #[error("reading head chunk file: {0}")]
    Io(String),
}

/// Delta-of-delta buckets: (prefix bits, prefix length, payload bits).
const DOD_BUCKETS: [(u64, u8, u8); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];

/// Builds one chunk, sample by sample. Timestamps must be strictly
/// increasing (the head guarantees it).
#[derive(Clone, Debug)]
pub struct XorAppender {
    w: BitWriter,
    count: u16,
    t: i64,
    t_delta: i64,
    v_bits: u64,
    /// Leading zeros of the current XOR window; 0xff before the first window.
    leading: u8,
    trailing: u8,
}

impl Default for XorAppender {
    fn default() -> Self {
        Self::new()
    }
}

impl XorAppender {
    pub fn new() -> Self {
        Self::with_capacity(128)
    }

    /// An empty chunk with room for `bytes` of encoded data: the head sizes
    /// a series' next chunk by its last one, so open chunks (one per series)
    /// hold little unused capacity.
    pub fn with_capacity(bytes: usize) -> Self {
        XorAppender {
            w: BitWriter::with_prefix({
                let mut v = Vec::with_capacity(bytes.max(16));
                v.extend_from_slice(&[0, 0]);
                v
            }),
            count: 0,
            t: 0,
            t_delta: 0,
            v_bits: 0,
            leading: 0xff,
            trailing: 0,
        }
    }

    /// The newest sample's timestamp (meaningless before the first).
    pub fn last_t(&self) -> i64 {
        self.t
    }

    /// Number of samples in the chunk.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// A copy of the encoded chunk so far (a valid chunk at any moment).
    pub fn bytes(&self) -> Vec<u8> {
        let mut b = self.w.bytes().to_vec();
        b[..2].copy_from_slice(&self.count.to_be_bytes());
        b
    }

    /// Finishes the chunk, returning its compact bytes.
    pub fn finish(mut self) -> Box<[u8]> {
        let count = self.count.to_be_bytes();
        self.w.bytes_mut()[..2].copy_from_slice(&count);
        self.w.shrink_to_fit();
        self.w.into_bytes().into_boxed_slice()
    }

    /// Decodes the samples so far with `mint ≤ t ≤ maxt` into `out`,
    /// without copying the chunk as [`XorAppender::bytes`] does.
    pub fn decode_range(
        &self,
        mint: i64,
        maxt: i64,
        out: &mut Vec<(i64, f64)>,
    ) -> Result<(), ChunkError> {
        decode_iter_range(
            XorIter::with_count(self.w.bytes(), self.count),
            mint,
            maxt,
            out,
        )
    }

    /// Bytes of heap the encoder holds (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.w.bytes().len()
    }

    pub fn append(&mut self, t: i64, v: f64) {
        // The buffer grows by a quarter when full (see `BitWriter`), so an
        // open chunk keeps little unused capacity.
        let bits = v.to_bits();
        match self.count {
            0 => {
                self.w.write_varint(t);
                self.w.write_bits(bits, 64);
            }
            1 => {
                let delta = t.wrapping_sub(self.t);
                self.w.write_varint(delta);
                self.t_delta = delta;
                self.write_value(bits);
            }
            _ => {
                let delta = t.wrapping_sub(self.t);
                let dod = delta.wrapping_sub(self.t_delta);
                self.write_dod(dod);
                self.t_delta = delta;
                self.write_value(bits);
            }
        }
        self.t = t;
        self.v_bits = bits;
        // The count header is written by `bytes`/`finish`, not here: one
        // cache line less touched per sample.
        self.count += 1;
    }

    fn write_dod(&mut self, dod: i64) {
        if dod == 0 {
            self.w.write_bit(false);
            return;
        }
        for (prefix, plen, bits) in DOD_BUCKETS {
            let lo = -(1i64 << (bits - 1));
            let hi = (1i64 << (bits - 1)) - 1;
            if dod >= lo && dod <= hi {
                self.w.write_bits(prefix, plen);
                self.w.write_bits((dod as u64) & ((1u64 << bits) - 1), bits);
                return;
            }
        }
        self.w.write_bits(0b1111, 4);
        self.w.write_bits(dod as u64, 64);
    }

    fn write_value(&mut self, bits: u64) {
        let x = bits ^ self.v_bits;
        if x == 0 {
            self.w.write_bit(false);
            return;
        }
        self.w.write_bit(true);
        // Five bits hold the leading count, so cap it at 31.
        let lead = (x.leading_zeros() as u8).min(31);
        let trail = x.trailing_zeros() as u8;
        if self.leading != 0xff && lead >= self.leading && trail >= self.trailing {
            self.w.write_bit(false);
            let sig = 64 - self.leading - self.trailing;
            self.w.write_bits(x >> self.trailing, sig);
        } else {
            self.leading = lead;
            self.trailing = trail;
            self.w.write_bit(true);
            self.w.write_bits(lead as u64, 5);
            let sig = 64 - lead - trail;
            // 64 significant bits are stored as 0 in six bits.
            self.w.write_bits((sig & 63) as u64, 6);
            self.w.write_bits(x >> trail, sig);
        }
    }
}

/// The number of samples a chunk holds, from its header.
pub fn chunk_len(bytes: &[u8]) -> Result<u16, ChunkError> {
    if bytes.len() < 2 {
        return Err(ChunkError::TooShort);
    }
    Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// Iterates over the samples of an encoded chunk.
#[derive(Clone, Debug)]
pub struct XorIter<'a> {
    r: BitReader<'a>,
    total: u16,
    read: u16,
    t: i64,
    t_delta: i64,
    v_bits: u64,
    leading: u8,
    trailing: u8,
    failed: bool,
}

impl<'a> XorIter<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, ChunkError> {
        let total = chunk_len(bytes)?;
        Ok(Self::with_count(bytes, total))
    }

    /// Iterates over the first `total` samples of chunk bytes whose header
    /// need not hold the count (an open chunk's encoder writes it only when
    /// the chunk is finished).
    fn with_count(bytes: &'a [u8], total: u16) -> Self {
        XorIter {
            r: BitReader::at_byte(bytes, 2),
            total,
            read: 0,
            t: 0,
            t_delta: 0,
            v_bits: 0,
            leading: 0,
            trailing: 0,
            failed: false,
        }
    }

    #[inline(always)]
    fn next_sample(&mut self) -> Result<(i64, f64), ChunkError> {
        if self.read >= 2 {
            if let Some(r) = self.next_from_window() {
                r?;
                self.read += 1;
                return Ok((self.t, f64::from_bits(self.v_bits)));
            }
        }
        match self.read {
            0 => {
                self.t = self.r.read_varint()?;
                self.v_bits = self.r.read_bits(64)?;
            }
            1 => {
                self.t_delta = self.r.read_varint()?;
                self.t = self.t.wrapping_add(self.t_delta);
                self.read_value()?;
            }
            _ => {
                let dod = self.read_dod()?;
                self.t_delta = self.t_delta.wrapping_add(dod);
                self.t = self.t.wrapping_add(self.t_delta);
                self.read_value()?;
            }
        }
        self.read += 1;
        Ok((self.t, f64::from_bits(self.v_bits)))
    }

    /// Decodes a later sample (delta-of-delta and value) from one 57-bit
    /// look-ahead window instead of a load per field: each load depends on
    /// the position the previous one left, so fewer of them is what makes
    /// decoding faster. `None` (nothing consumed) for the rare layouts that
    /// do not fit the window: a 64-bit delta-of-delta, or value bits that
    /// run past it when no window is reused.
    #[inline(always)]
    fn next_from_window(&mut self) -> Option<Result<(), ChunkError>> {
        const WINDOW: u32 = 57;
        // The next 57 bits, left-aligned: bit 63 is the next bit.
        let x = self.r.peek_bits(WINDOW as u8) << (64 - WINDOW);
        let ones = (!x).leading_zeros().min(4);
        let (dod, mut used) = match ones {
            0 => (0i64, 1u32),
            1..=3 => {
                let bits = [0, 14, 17, 20][ones as usize];
                let raw = (x << (ones + 1)) >> (64 - bits);
                let shift = 64 - bits;
                (((raw << shift) as i64) >> shift, ones + 1 + bits)
            }
            _ => return None,
        };
        let y = x << used;
        let (leading, trailing) = if y >> 63 == 0 {
            used += 1;
            (self.leading, self.trailing)
        } else if (y >> 62) & 1 == 0 {
            used += 2;
            (self.leading, self.trailing)
        } else {
            let hdr = (y << 2) >> (64 - 11);
            used += 13;
            let leading = (hdr >> 6) as u8;
            let sig = match (hdr & 63) as u8 {
                0 => 64,
                n => n,
            };
            (leading, 64u8.saturating_sub(leading).saturating_sub(sig))
        };
        let changed = y >> 63 == 1;
        let sig = if changed {
            64 - leading as u32 - trailing as u32
        } else {
            0
        };
        if used + sig > WINDOW {
            return None;
        }
        let xor = if sig == 0 {
            0
        } else {
            (x << used) >> (64 - sig)
        };
        used += sig;
        if let Err(e) = self.r.skip_bits(used as u8) {
            return Some(Err(e.into()));
        }
        self.leading = leading;
        self.trailing = trailing;
        self.t_delta = self.t_delta.wrapping_add(dod);
        self.t = self.t.wrapping_add(self.t_delta);
        self.v_bits ^= xor << trailing;
        Some(Ok(()))
    }

    #[inline(always)]
    fn read_dod(&mut self) -> Result<i64, ChunkError> {
        // The prefix is up to four one bits ended by a zero: look at four
        // bits at once rather than one at a time.
        let p = self.r.peek_bits(4) as u8;
        let ones = ((!p) << 4).leading_zeros().min(4) as u8;
        self.r.skip_bits(if ones < 4 { ones + 1 } else { 4 })?;
        let bits = match ones {
            0 => return Ok(0),
            1 => 14,
            2 => 17,
            3 => 20,
            _ => return Ok(self.r.read_bits(64)? as i64),
        };
        let raw = self.r.read_bits(bits)?;
        // Sign-extend the two's complement payload.
        let shift = 64 - bits as u32;
        Ok(((raw << shift) as i64) >> shift)
    }

    #[inline(always)]
    fn read_value(&mut self) -> Result<(), ChunkError> {
        // `0`: same value; `10`: XOR in the previous window; `11`: a new
        // window (5 bits leading zeros, 6 bits significant bits) follows.
        let p = self.r.peek_bits(2);
        if p < 2 {
            self.r.skip_bits(1)?;
            return Ok(());
        }
        self.r.skip_bits(2)?;
        if p == 3 {
            let hdr = self.r.read_bits(11)?;
            self.leading = (hdr >> 6) as u8;
            let mut sig = (hdr & 63) as u8;
            if sig == 0 {
                sig = 64;
            }
            // A corrupt header could claim more than 64 bits in total.
            self.trailing = 64u8.saturating_sub(self.leading).saturating_sub(sig);
        }
        let sig = 64 - self.leading - self.trailing;
        let x = self.r.read_bits(sig)?;
        self.v_bits ^= x << self.trailing;
        Ok(())
    }
}

impl Iterator for XorIter<'_> {
    type Item = Result<(i64, f64), ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.read >= self.total {
            return None;
        }
        let r = self.next_sample();
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.total - self.read) as usize;
        (0, Some(n))
    }
}

/// Decodes a whole chunk.
pub fn decode(bytes: &[u8]) -> Result<Vec<(i64, f64)>, ChunkError> {
    XorIter::new(bytes)?.collect()
}

/// Decodes the samples of a chunk with `mint ≤ t ≤ maxt` into `out`.
pub fn decode_range(
    bytes: &[u8],
    mint: i64,
    maxt: i64,
    out: &mut Vec<(i64, f64)>,
) -> Result<(), ChunkError> {
    decode_iter_range(XorIter::new(bytes)?, mint, maxt, out)
}

fn decode_iter_range(
    mut it: XorIter<'_>,
    mint: i64,
    maxt: i64,
    out: &mut Vec<(i64, f64)>,
) -> Result<(), ChunkError> {
    // Not through `Iterator::next`: with the decoder state local to this
    // loop, it stays in registers.
    while it.read < it.total {
        let (t, v) = it.next_sample()?;
        if t > maxt {
            break;
        }
        if t >= mint {
            out.push((t, v));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use panoptes_model::STALE_NAN_BITS;
    use proptest::prelude::*;

    fn encode(samples: &[(i64, u64)]) -> Box<[u8]> {
        let mut a = XorAppender::new();
        for &(t, v) in samples {
            a.append(t, f64::from_bits(v));
        }
        a.finish()
    }

    fn assert_round_trip(samples: &[(i64, u64)]) {
        let bytes = encode(samples);
        let got: Vec<(i64, u64)> = decode(&bytes)
            .unwrap()
            .into_iter()
            .map(|(t, v)| (t, v.to_bits()))
            .collect();
        assert_eq!(got, samples);
    }

    #[test]
    fn empty_chunk_decodes_to_nothing() {
        assert_eq!(decode(&XorAppender::new().finish()).unwrap(), vec![]);
    }

    #[test]
    fn regular_scrape_compresses_well() {
        let samples: Vec<(i64, u64)> = (0..120)
            .map(|i| (1_700_000_000_000 + i * 15_000, (i as f64 * 3.0).to_bits()))
            .collect();
        let bytes = encode(&samples);
        assert_round_trip(&samples);
        // Constant interval: one bit per timestamp; small value deltas.
        assert!(bytes.len() < 120 * 3, "chunk is {} bytes", bytes.len());
    }

    #[test]
    fn an_open_chunk_grows_a_quarter_at_a_time() {
        let mut app = XorAppender::with_capacity(48);
        let mut worst = 0.0f64;
        for i in 0..120i64 {
            // Jittered timestamps and a random-looking walk: several
            // bytes per sample, many reallocations.
            let v = ((i * 7919) % 1013) as f64 * 0.37 + i as f64;
            app.append(1_700_000_000_000 + i * 1000 + (i * 31) % 11, v);
            let (len, cap) = (app.w.bytes().len(), app.w.capacity());
            assert!(cap >= len);
            if len > 64 {
                worst = worst.max(cap as f64 / len as f64);
            }
        }
        assert!(
            worst <= 1.26,
            "capacity reached {worst:.2}x the bytes written"
        );
    }

    #[test]
    fn stale_marker_and_nan_payloads_survive() {
        let samples = vec![
            (1000, 1.5f64.to_bits()),
            (2000, STALE_NAN_BITS),
            (3000, f64::NAN.to_bits()),
            (4000, 0x7ff8_dead_beef_0001),
            (5000, STALE_NAN_BITS),
            (6000, (-0.0f64).to_bits()),
            (7000, f64::INFINITY.to_bits()),
            (7001, f64::NEG_INFINITY.to_bits()),
        ];
        assert_round_trip(&samples);
    }

    #[test]
    fn every_dod_bucket_round_trips() {
        let mut t = 0i64;
        let mut samples = vec![];
        for (i, gap) in [
            1i64,
            1,
            8191,
            -8000 + 8191,
            65_000,
            500_000,
            10_000_000_000,
            1,
            2,
        ]
        .iter()
        .enumerate()
        {
            t += gap.abs().max(1);
            samples.push((t, (i as f64).to_bits()));
        }
        assert_round_trip(&samples);
    }

    #[test]
    fn truncated_chunk_is_an_error_not_a_panic() {
        let samples: Vec<(i64, u64)> = (0..50)
            .map(|i| (i * 1000, (i as f64).sqrt().to_bits()))
            .collect();
        let bytes = encode(&samples);
        for cut in 0..bytes.len() {
            let r = decode(&bytes[..cut]);
            assert!(r.is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn open_chunk_decodes_without_a_copy() {
        let mut a = XorAppender::new();
        let mut want = vec![];
        for i in 0..50i64 {
            let v = (i as f64 * 1.37).sin();
            a.append(i * 1000 + i % 3, v);
            want.push((i * 1000 + i % 3, v));
            let mut got = vec![];
            a.decode_range(i64::MIN, i64::MAX, &mut got).unwrap();
            assert_eq!(got, want);
            let mut part = vec![];
            a.decode_range(5000, 20_000, &mut part).unwrap();
            let mut copy = vec![];
            decode_range(&a.bytes(), 5000, 20_000, &mut copy).unwrap();
            assert_eq!(part, copy);
        }
    }

    #[test]
    fn decode_range_is_inclusive() {
        let samples: Vec<(i64, u64)> = (0..10).map(|i| (i * 10, 1f64.to_bits())).collect();
        let bytes = encode(&samples);
        let mut out = vec![];
        decode_range(&bytes, 20, 50, &mut out).unwrap();
        assert_eq!(
            out.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![20, 30, 40, 50]
        );
    }

    proptest! {
        #[test]
        fn arbitrary_samples_round_trip(
            start in any::<i32>(),
            gaps in proptest::collection::vec(1i64..5_000_000_000, 0..120),
            values in proptest::collection::vec(any::<u64>(), 120),
        ) {
            let mut t = start as i64;
            let mut samples = vec![(t, values[0])];
            for (i, g) in gaps.iter().enumerate() {
                t += g;
                samples.push((t, values[i + 1]));
            }
            assert_round_trip(&samples);
        }

        #[test]
        fn slowly_changing_values_round_trip(
            base in any::<f64>(),
            steps in proptest::collection::vec(-3i32..4, 1..120),
            jitter in proptest::collection::vec(-50i64..50, 120),
        ) {
            let mut v = base;
            let mut t = 1_600_000_000_000i64;
            let mut samples = vec![];
            for (i, s) in steps.iter().enumerate() {
                t += 15_000 + jitter[i];
                v += *s as f64 * 0.25;
                samples.push((t, v.to_bits()));
            }
            assert_round_trip(&samples);
        }
    }
}
