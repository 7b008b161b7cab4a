//! Bit-level writer and reader used by the Gorilla chunk encoding, plus the
//! byte-level varint helpers shared by the WAL, the block index and the chunk
//! files.

/// Appends bits, most significant first, to a growable byte buffer.
#[derive(Clone, Debug, Default)]
pub struct BitWriter {
    buf: Vec<u8>,
    /// Bits still free in the last byte of `buf` (0 means a new byte is
    /// needed before the next bit).
    free: u8,
}

impl BitWriter {
    /// A writer that continues after `prefix` (byte aligned).
    pub fn with_prefix(prefix: Vec<u8>) -> Self {
        BitWriter {
            buf: prefix,
            free: 0,
        }
    }

    /// Rebuilds a writer from bytes and the count of unused low bits in the
    /// last byte, as returned by [`BitWriter::free_bits`].
    pub fn from_parts(buf: Vec<u8>, free: u8) -> Self {
        BitWriter { buf, free }
    }

    pub fn free_bits(&self) -> u8 {
        self.free
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes of buffer allocated (written or not).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn shrink_to_fit(&mut self) {
        self.buf.shrink_to_fit();
    }

    /// Starts a new byte, growing the buffer by a quarter (at least 16
    /// bytes) when it is full rather than doubling it: an open chunk per
    /// series is the head's largest cost, and a doubled buffer would carry
    /// up to its size again unused until the chunk is cut.
    #[inline]
    fn push_byte(&mut self) {
        if self.buf.len() == self.buf.capacity() {
            self.grow();
        }
        self.buf.push(0);
        self.free = 8;
    }

    #[cold]
    fn grow(&mut self) {
        let len = self.buf.len();
        self.buf.reserve_exact((len / 4).max(16));
    }

    #[inline]
    pub fn write_bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.push_byte();
        }
        if bit {
            let last = self.buf.len() - 1;
            self.buf[last] |= 1 << (self.free - 1);
        }
        self.free -= 1;
    }

    /// Writes the low `n` bits of `v` (n ≤ 64), most significant first.
    #[inline]
    pub fn write_bits(&mut self, v: u64, mut n: u8) {
        debug_assert!(n <= 64);
        while n > 0 {
            if self.free == 0 {
                self.push_byte();
            }
            let take = n.min(self.free);
            // The `take` bits of v just below bit position n.
            let chunk = ((v >> (n - take)) & ((1u64 << take) - 1)) as u8;
            let last = self.buf.len() - 1;
            self.buf[last] |= chunk << (self.free - take);
            self.free -= take;
            n -= take;
        }
    }

    /// Writes a byte-granular unsigned varint through the bit stream.
    pub fn write_uvarint(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.write_bits(b as u64, 8);
                return;
            }
            self.write_bits((b | 0x80) as u64, 8);
        }
    }

    pub fn write_varint(&mut self, v: i64) {
        self.write_uvarint(zigzag(v));
    }
}

/// Reads bits, most significant first, from a byte slice.
#[derive(Clone, Debug)]
pub struct BitReader<'a> {
    buf: &'a [u8],
    /// Position in bits.
    pos: usize,
}

/// The bit stream ended before a complete value was read: the chunk is
/// truncated or corrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bit stream ended unexpectedly at bit {0}")]
pub struct EndOfStream(pub usize);

impl<'a> BitReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BitReader { buf, pos: 0 }
    }

    /// Starts reading at a byte offset.
    pub fn at_byte(buf: &'a [u8], byte: usize) -> Self {
        BitReader { buf, pos: byte * 8 }
    }

    /// Bits left to read.
    #[inline]
    pub fn remaining_bits(&self) -> usize {
        (self.buf.len() * 8).saturating_sub(self.pos)
    }

    /// The 64 bits starting at the current position's byte, big endian;
    /// bytes past the end read as zero.
    #[inline(always)]
    fn word(&self) -> u64 {
        let byte = self.pos >> 3;
        match self.buf.get(byte..byte + 8) {
            Some(b) => u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            None => {
                let mut tmp = [0u8; 8];
                let rest = self.buf.get(byte..).unwrap_or_default();
                tmp[..rest.len()].copy_from_slice(rest);
                u64::from_be_bytes(tmp)
            }
        }
    }

    /// The next `n` bits (1 ≤ n ≤ 57) without consuming them, as the low
    /// bits of a u64; bits past the end read as zero.
    #[inline(always)]
    pub fn peek_bits(&self, n: u8) -> u64 {
        debug_assert!((1..=57).contains(&n));
        (self.word() << (self.pos & 7)) >> (64 - n as u32)
    }

    /// Consumes `n` bits (already looked at with [`BitReader::peek_bits`]).
    #[inline(always)]
    pub fn skip_bits(&mut self, n: u8) -> Result<(), EndOfStream> {
        if self.pos + n as usize > self.buf.len() * 8 {
            return Err(EndOfStream(self.pos));
        }
        self.pos += n as usize;
        Ok(())
    }

    #[inline]
    pub fn read_bit(&mut self) -> Result<bool, EndOfStream> {
        let byte = self.pos >> 3;
        let b = *self.buf.get(byte).ok_or(EndOfStream(self.pos))?;
        let bit = (b >> (7 - (self.pos & 7))) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    /// Reads `n` bits (n ≤ 64) as the low bits of a u64.
    #[inline(always)]
    pub fn read_bits(&mut self, n: u8) -> Result<u64, EndOfStream> {
        debug_assert!(n <= 64);
        if self.pos + n as usize > self.buf.len() * 8 {
            return Err(EndOfStream(self.pos));
        }
        match n {
            0 => Ok(0),
            1..=57 => {
                let v = self.peek_bits(n);
                self.pos += n as usize;
                Ok(v)
            }
            _ => {
                // Two reads: the word holds at least 57 bits past the position.
                let hi = self.peek_bits(n - 32);
                self.pos += (n - 32) as usize;
                let lo = self.peek_bits(32);
                self.pos += 32;
                Ok((hi << 32) | lo)
            }
        }
    }

    pub fn read_uvarint(&mut self) -> Result<u64, EndOfStream> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.read_bits(8)? as u8;
            if shift >= 64 {
                return Err(EndOfStream(self.pos));
            }
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    pub fn read_varint(&mut self) -> Result<i64, EndOfStream> {
        Ok(unzigzag(self.read_uvarint()?))
    }
}

#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends an unsigned LEB128 varint to a byte buffer.
#[inline]
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a zigzag signed varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over bytes for decoding records; every read is bounds-checked so
/// corrupt input yields an error, never a panic.
#[derive(Clone, Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Input ended or was malformed while decoding at `offset`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed data at byte {offset}: {what}")]
pub struct DecodeError {
    pub offset: usize,
    pub what: &'static str,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    pub fn at(buf: &'a [u8], pos: usize) -> Self {
        Decoder { buf, pos }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn err(&self, what: &'static str) -> DecodeError {
        DecodeError {
            offset: self.pos,
            what,
        }
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.err("unexpected end"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            if shift > 63 {
                return Err(self.err("varint overflow"));
            }
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    pub fn varint(&mut self) -> Result<i64, DecodeError> {
        Ok(unzigzag(self.uvarint()?))
    }

    pub fn u32_le(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64_le(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(self.err("unexpected end"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.uvarint()?;
        let n = usize::try_from(n).map_err(|_| self.err("length too large"))?;
        self.take(n)
    }

    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| self.err("invalid UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip() {
        let mut w = BitWriter::default();
        w.write_bit(true);
        w.write_bits(0b1011, 4);
        w.write_bits(u64::MAX, 64);
        w.write_bits(0, 3);
        w.write_uvarint(300);
        w.write_varint(-5);
        let bytes = w.into_bytes();
        let mut r = BitReader::new(&bytes);
        assert!(r.read_bit().unwrap());
        assert_eq!(r.read_bits(4).unwrap(), 0b1011);
        assert_eq!(r.read_bits(64).unwrap(), u64::MAX);
        assert_eq!(r.read_bits(3).unwrap(), 0);
        assert_eq!(r.read_uvarint().unwrap(), 300);
        assert_eq!(r.read_varint().unwrap(), -5);
        assert!(r.read_bits(8).is_err());
    }

    #[test]
    fn reads_at_every_offset_and_width_agree_with_single_bits() {
        let bytes: Vec<u8> = (0..40u32)
            .map(|i| (i.wrapping_mul(0x9e) ^ 0x5a) as u8)
            .collect();
        let total = bytes.len() * 8;
        let bit = |i: usize| ((bytes[i / 8] >> (7 - i % 8)) & 1) as u64;
        for start in 0..total {
            for n in 0..=64u8 {
                let mut r = BitReader::new(&bytes);
                r.pos = start;
                let got = r.read_bits(n);
                if start + n as usize > total {
                    assert!(got.is_err());
                    continue;
                }
                let want = (start..start + n as usize).fold(0u64, |v, i| (v << 1) | bit(i));
                assert_eq!(got.unwrap(), want, "start {start} n {n}");
                assert_eq!(r.pos, start + n as usize);
            }
        }
    }

    #[test]
    fn decoder_rejects_truncation() {
        let mut out = Vec::new();
        put_bytes(&mut out, b"hello");
        let mut d = Decoder::new(&out[..3]);
        assert!(d.bytes().is_err());
        let mut d = Decoder::new(&out);
        assert_eq!(d.str().unwrap(), "hello");
        assert!(d.is_empty());
    }
}
