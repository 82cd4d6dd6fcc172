//! The frames of a zstd payload.
//!
//! `payload.tar.zst` is a sequence of zstd frames, and the content of every regular file of
//! at least [`FRAMED_MIN`] bytes is a frame of its own. A reader sees one stream (a zstd
//! decoder reads frame after frame), so nothing about reading changes. What it buys: an
//! update can take such a file's frame from the installed copy instead of the network,
//! because compressing the same bytes with [`FrameReader`] gives the same frame (the same
//! library, level and feeding on both sides). Nothing rests on that: the frame is part of
//! the bundle stream whose digest and signature are checked, and a device whose zstd
//! compresses differently sees the frame's sha256 differ and downloads it.

use std::io::{self, Read, Write};

/// Files at least this large get a frame of their own.
pub const FRAMED_MIN: u64 = 64 * 1024;
/// The compression level of every frame.
pub const LEVEL: i32 = 3;
/// How much input each step of the encoder is fed.
const CHUNK: usize = 128 * 1024;

/// Exactly `size` bytes of `src`, read as one zstd frame (an error when `src` ends early).
pub struct FrameReader<R> {
    src: R,
    left: u64,
    enc: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    out: Vec<u8>,
    pos: usize,
    buf: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    pub fn new(src: R, size: u64) -> io::Result<FrameReader<R>> {
        Ok(FrameReader {
            src,
            left: size,
            enc: Some(zstd::stream::write::Encoder::new(Vec::new(), LEVEL)?),
            out: Vec::new(),
            pos: 0,
            buf: vec![0; CHUNK],
        })
    }

    /// The source, once the frame has been read.
    pub fn into_inner(self) -> R {
        self.src
    }
}

impl<R: Read> Read for FrameReader<R> {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            let Some(enc) = self.enc.as_mut() else {
                return Ok(0);
            };
            self.out.clear();
            self.pos = 0;
            if self.left > 0 {
                let n = CHUNK.min(usize::try_from(self.left).unwrap_or(CHUNK));
                self.src.read_exact(&mut self.buf[..n])?;
                enc.write_all(&self.buf[..n])?;
                self.left -= n as u64;
                std::mem::swap(&mut self.out, enc.get_mut());
            } else if let Some(enc) = self.enc.take() {
                self.out = enc.finish()?;
            }
        }
        let n = dst.len().min(self.out.len() - self.pos);
        dst[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A zstd payload being written: frame after frame, with [`Frames::own_frame`] for a
/// file's content.
pub(crate) struct Frames<W: Write> {
    enc: Option<zstd::stream::write::Encoder<'static, W>>,
}

fn broken() -> io::Error {
    io::Error::other("the payload's compressor failed before")
}

impl<W: Write> Frames<W> {
    pub fn new(w: W) -> io::Result<Frames<W>> {
        Ok(Frames {
            enc: Some(zstd::stream::write::Encoder::new(w, LEVEL)?),
        })
    }

    /// Ends the frame being written, writes `size` bytes of `r` as a frame of their own,
    /// and starts the next frame.
    pub fn own_frame(&mut self, r: &mut dyn Read, size: u64) -> io::Result<()> {
        let mut w = self.enc.take().ok_or_else(broken)?.finish()?;
        io::copy(&mut FrameReader::new(r, size)?, &mut w)?;
        self.enc = Some(zstd::stream::write::Encoder::new(w, LEVEL)?);
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.enc.take().ok_or_else(broken)?.finish()
    }
}

impl<W: Write> Write for Frames<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.enc.as_mut().ok_or_else(broken)?.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.enc.as_mut().ok_or_else(broken)?.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i * 7 % 251) as u8 ^ (i / 3000) as u8)
            .collect()
    }

    #[test]
    fn a_frame_is_the_same_however_it_is_made_and_read() {
        let d = data(300_000);
        let mut a = Vec::new();
        FrameReader::new(&d[..], d.len() as u64)
            .unwrap()
            .read_to_end(&mut a)
            .unwrap();
        // Read in small pieces: the same bytes.
        let mut b = Vec::new();
        let mut r = FrameReader::new(&d[..], d.len() as u64).unwrap();
        let mut piece = [0u8; 777];
        loop {
            let n = r.read(&mut piece).unwrap();
            if n == 0 {
                break;
            }
            b.extend_from_slice(&piece[..n]);
        }
        assert_eq!(a, b);
        assert!(a.len() < d.len());
        assert_eq!(zstd::decode_all(&a[..]).unwrap(), d);
        // Inside a payload: the frame appears byte for byte, and the whole decodes as one.
        let mut f = Frames::new(Vec::new()).unwrap();
        f.write_all(b"before").unwrap();
        f.own_frame(&mut &d[..], d.len() as u64).unwrap();
        f.write_all(b"after").unwrap();
        let all = f.finish().unwrap();
        assert!(
            all.windows(a.len()).any(|w| w == a),
            "the frame is in the payload"
        );
        let mut expect = b"before".to_vec();
        expect.extend_from_slice(&d);
        expect.extend_from_slice(b"after");
        assert_eq!(zstd::decode_all(&all[..]).unwrap(), expect);
    }

    #[test]
    fn a_short_source_is_an_error() {
        let d = data(1000);
        let mut out = Vec::new();
        let e = FrameReader::new(&d[..], 2000)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
