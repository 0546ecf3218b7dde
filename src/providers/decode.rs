//! Reading a body through its `Content-Encoding`, for inspection only: the client (and the
//! cache) get the bytes as they came. Decoding is push-style, chunk by chunk as the body
//! arrives, and capped in decoded bytes, so a small compressed body cannot expand without bound.

use std::io::{self, Write};

/// How a body was encoded, from its `Content-Encoding` (RFC 9110 §8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    /// `deflate`: the zlib format (RFC 9110 §8.4.1.2).
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    /// The coding of a body with this `Content-Encoding` value; `None` for a coding promptgate
    /// cannot read (`compress`, an unknown name, or several codings stacked).
    pub fn of(content_encoding: Option<&str>) -> Option<Coding> {
        let value = content_encoding.unwrap_or("").trim();
        Some(match value.to_ascii_lowercase().as_str() {
            "" | "identity" => Coding::Identity,
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            "br" => Coding::Brotli,
            "zstd" => Coding::Zstd,
            _ => return None,
        })
    }
}

/// The decoded bytes collect here between writes; refuses to hold more than the cap in all.
#[derive(Debug)]
struct Capped {
    out: Vec<u8>,
    total: usize,
    cap: usize,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.total += buf.len();
        if self.total > self.cap {
            return Err(io::Error::other("decoded body larger than the cap"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Inner {
    Gzip(flate2::write::GzDecoder<Capped>),
    Deflate(flate2::write::ZlibDecoder<Capped>),
    Brotli(Box<brotli::DecompressorWriter<Capped>>),
    Zstd(zstd::stream::write::Decoder<'static, Capped>),
}

/// A push decoder for one body: [`Decoder::write`] each encoded chunk, then
/// [`Decoder::finish`]; each returns the bytes decoded so far.
pub struct Decoder {
    inner: Inner,
}

/// Brotli's internal buffer (bytes).
const BROTLI_BUFFER: usize = 16 * 1024;

impl Decoder {
    /// A decoder for `coding` that fails once more than `cap` bytes were decoded; `None` for
    /// the identity coding (nothing to decode).
    pub fn new(coding: Coding, cap: usize) -> io::Result<Option<Decoder>> {
        let sink = Capped {
            out: Vec::new(),
            total: 0,
            cap,
        };
        let inner = match coding {
            Coding::Identity => return Ok(None),
            Coding::Gzip => Inner::Gzip(flate2::write::GzDecoder::new(sink)),
            Coding::Deflate => Inner::Deflate(flate2::write::ZlibDecoder::new(sink)),
            Coding::Brotli => Inner::Brotli(Box::new(brotli::DecompressorWriter::new(
                sink,
                BROTLI_BUFFER,
            ))),
            Coding::Zstd => Inner::Zstd(zstd::stream::write::Decoder::new(sink)?),
        };
        Ok(Some(Decoder { inner }))
    }

    /// Decodes one chunk; the bytes it yielded (flushed, so a stream's lines are read as they
    /// come). An error (corrupt data, or over the cap) ends decoding.
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<Vec<u8>> {
        match &mut self.inner {
            Inner::Gzip(d) => {
                d.write_all(chunk)?;
                d.flush()?;
            }
            Inner::Deflate(d) => {
                d.write_all(chunk)?;
                d.flush()?;
            }
            Inner::Brotli(d) => {
                d.write_all(chunk)?;
                d.flush()?;
            }
            Inner::Zstd(d) => {
                d.write_all(chunk)?;
                d.flush()?;
            }
        }
        Ok(std::mem::take(&mut self.sink().out))
    }

    /// Ends the body: the last bytes held back by the decoder.
    pub fn finish(&mut self) -> io::Result<Vec<u8>> {
        match &mut self.inner {
            Inner::Gzip(d) => d.try_finish()?,
            Inner::Deflate(d) => d.try_finish()?,
            Inner::Brotli(d) => d.close()?,
            Inner::Zstd(d) => d.flush()?,
        }
        Ok(std::mem::take(&mut self.sink().out))
    }

    /// Changes the cap on the decoded bytes (counting those already decoded).
    pub fn set_cap(&mut self, cap: usize) {
        self.sink().cap = cap;
    }

    fn sink(&mut self) -> &mut Capped {
        match &mut self.inner {
            Inner::Gzip(d) => d.get_mut(),
            Inner::Deflate(d) => d.get_mut(),
            Inner::Brotli(d) => d.get_mut(),
            Inner::Zstd(d) => d.get_mut(),
        }
    }
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.inner {
            Inner::Gzip(_) => "Decoder(gzip)",
            Inner::Deflate(_) => "Decoder(deflate)",
            Inner::Brotli(_) => "Decoder(br)",
            Inner::Zstd(_) => "Decoder(zstd)",
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Encoders for tests here and in the reader's tests.
    pub(in crate::providers) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(in crate::providers) fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            e.write_all(data).unwrap();
        }
        out
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Decodes `encoded` fed in pieces of `piece` bytes.
    fn decode(coding: Coding, encoded: &[u8], piece: usize, cap: usize) -> io::Result<Vec<u8>> {
        let mut d = Decoder::new(coding, cap)?.expect("not identity");
        let mut out = Vec::new();
        for chunk in encoded.chunks(piece) {
            out.extend(d.write(chunk)?);
        }
        out.extend(d.finish()?);
        Ok(out)
    }

    #[test]
    fn decodes_each_coding_in_any_pieces() {
        let text: Vec<u8> = (0..2000)
            .flat_map(|i| format!("data: {{\"n\":{i}}}\n\n").into_bytes())
            .collect();
        for (coding, encoded) in [
            (Coding::Gzip, gzip(&text)),
            (Coding::Deflate, zlib(&text)),
            (Coding::Brotli, brotli(&text)),
            (Coding::Zstd, zstd(&text)),
        ] {
            for piece in [1, 7, 4096, encoded.len()] {
                assert_eq!(
                    decode(coding, &encoded, piece, 1 << 20).unwrap(),
                    text,
                    "{coding:?} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn a_bomb_stops_at_the_cap() {
        let zeros = vec![0u8; 4 << 20];
        for (coding, encoded) in [
            (Coding::Gzip, gzip(&zeros)),
            (Coding::Brotli, brotli(&zeros)),
            (Coding::Zstd, zstd(&zeros)),
        ] {
            assert!(encoded.len() < 64 << 10, "{coding:?} compresses zeros well");
            assert!(
                decode(coding, &encoded, 1 << 16, 1 << 20).is_err(),
                "{coding:?}"
            );
        }
    }

    #[test]
    fn corrupt_data_is_an_error() {
        assert!(decode(Coding::Gzip, b"not gzip at all", 4, 1 << 20).is_err());
    }

    #[test]
    fn codings_by_name() {
        assert_eq!(Coding::of(None), Some(Coding::Identity));
        assert_eq!(Coding::of(Some(" GZIP ")), Some(Coding::Gzip));
        assert_eq!(Coding::of(Some("x-gzip")), Some(Coding::Gzip));
        assert_eq!(Coding::of(Some("br")), Some(Coding::Brotli));
        assert_eq!(Coding::of(Some("compress")), None);
        assert_eq!(Coding::of(Some("gzip, br")), None);
    }
}
