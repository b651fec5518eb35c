//! The byte streams a backup passes through: compression on the way to disk,
//! decompression on the way back, and the SHA-256 of the bytes as stored.

use std::io::{self, Read, Write};

use flate2::{read::MultiGzDecoder, write::GzEncoder};
use sha2::{Digest, Sha256};

use crate::store::backup_file::{self, Compression};

/// zstd's default level: several times smaller than plain SQL at a few hundred MB/s.
const ZSTD_LEVEL: i32 = 3;
/// Below gzip's default 6: nearly as small, and about twice as fast.
const GZIP_LEVEL: u32 = 3;

pub enum Encoder<W: Write> {
    Plain(W),
    Gzip(GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub fn new(compression: Compression, inner: W) -> io::Result<Encoder<W>> {
        Ok(match compression {
            Compression::None => Encoder::Plain(inner),
            Compression::Gzip => Encoder::Gzip(GzEncoder::new(inner, flate2::Compression::new(GZIP_LEVEL))),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(inner, ZSTD_LEVEL)?),
        })
    }

    /// Writes the compressed stream's end; without it the file would not decompress.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(inner) => Ok(inner),
            Encoder::Gzip(encoder) => encoder.finish(),
            Encoder::Zstd(encoder) => encoder.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(inner) => inner.write(buf),
            Encoder::Gzip(encoder) => encoder.write(buf),
            Encoder::Zstd(encoder) => encoder.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(inner) => inner.flush(),
            Encoder::Gzip(encoder) => encoder.flush(),
            Encoder::Zstd(encoder) => encoder.flush(),
        }
    }
}

/// The plain SQL inside a stored backup.
pub fn decoder<'a>(compression: Compression, inner: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(inner),
        // Multi: `cat a.gz b.gz` is a valid gzip file too.
        Compression::Gzip => Box::new(MultiGzDecoder::new(inner)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(inner)?),
    })
}

/// Hashes and counts what passes through, in either direction.
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Hashing<T> {
        Hashing { inner, hasher: Sha256::new(), bytes: 0 }
    }

    /// The inner stream, the SHA-256 as hex, and the byte count.
    pub fn finish(self) -> (T, String, u64) {
        (self.inner, backup_file::hex(&self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_round_trips_and_hashes_what_is_stored() {
        let sql: Vec<u8> =
            (0..200_000).flat_map(|i| format!("INSERT INTO t VALUES ({i}, 'row {i}');\n").into_bytes()).collect();
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut encoder = Encoder::new(compression, Hashing::new(Vec::new())).unwrap();
            for chunk in sql.chunks(65_536) {
                encoder.write_all(chunk).unwrap();
            }
            let (stored, sha, bytes) = encoder.finish().unwrap().finish();
            assert_eq!(bytes, stored.len() as u64);
            let mut check = Hashing::new(stored.as_slice());
            let mut back = Vec::new();
            decoder(compression, &mut check).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, sql, "{compression:?}");
            assert_eq!(check.finish().1, sha, "{compression:?}: the hash is of the stored bytes");
            if compression != Compression::None {
                assert!(stored.len() * 4 < sql.len(), "{compression:?} compresses");
            }
        }
    }

    #[test]
    fn a_truncated_compressed_file_does_not_decode_cleanly() {
        for compression in [Compression::Gzip, Compression::Zstd] {
            let mut encoder = Encoder::new(compression, Vec::new()).unwrap();
            encoder.write_all(&b"SELECT 1;\n".repeat(10_000)).unwrap();
            let stored = encoder.finish().unwrap();
            let mut back = Vec::new();
            let result = decoder(compression, &stored[..stored.len() / 2]).unwrap().read_to_end(&mut back);
            assert!(result.is_err(), "{compression:?}: a cut stream is an error, not a short read");
        }
    }
}
