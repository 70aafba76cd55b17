//! Block decompressors. Every one writes straight into a caller buffer whose
//! length is the most the block may hold (the block size, or 8 KiB for metadata),
//! so a hostile block can never expand beyond it.
//!
//! Decompressor state that is costly to build (libdeflate, zstd contexts) lives in
//! thread-locals: reader threads never contend on it.

#![forbid(unsafe_code)]

use std::cell::RefCell;

use super::error::{Error, Result};

/// The compressors of squashfs 4.0, by superblock id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressor {
    Gzip,
    Lzma,
    Lzo,
    Xz,
    Lz4,
    Zstd,
}

/// xz and lzma dictionaries are at most the block size (1 MiB); this bounds the
/// decoder's memory well above any image mksquashfs writes.
const LZMA_MEMLIMIT: u64 = 64 << 20;

thread_local! {
    static DEFLATE: RefCell<Option<libdeflater::Decompressor>> = const { RefCell::new(None) };
    static ZSTD: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

impl Compressor {
    pub fn from_id(id: u16) -> Result<Self> {
        Ok(match id {
            1 => Self::Gzip,
            2 => Self::Lzma,
            3 => Self::Lzo,
            4 => Self::Xz,
            5 => Self::Lz4,
            6 => Self::Zstd,
            _ => return Err(Error::UnsupportedCompressor(id)),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Lzma => "lzma",
            Self::Lzo => "lzo",
            Self::Xz => "xz",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }

    /// Decompresses `src` into `dst` and returns the number of bytes produced.
    /// Output that would not fit in `dst` is an error, never a reallocation.
    pub fn decompress(self, src: &[u8], dst: &mut [u8]) -> Result<usize, String> {
        match self {
            Self::Gzip => DEFLATE.with(|cell| {
                let mut slot = cell.borrow_mut();
                let d = slot.get_or_insert_with(libdeflater::Decompressor::new);
                // squashfs gzip blocks are zlib streams (header + adler32).
                d.zlib_decompress(src, dst).map_err(|e| e.to_string())
            }),
            Self::Zstd => ZSTD.with(|cell| {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
                }
                match slot.as_mut() {
                    Some(d) => d.decompress_to_buffer(src, dst).map_err(|e| e.to_string()),
                    None => Err("no zstd context".to_string()),
                }
            }),
            Self::Lz4 => lz4_flex::block::decompress_into(src, dst).map_err(|e| e.to_string()),
            Self::Lzo => lzo::decompress_into(src, dst).map_err(|e| e.to_string()),
            Self::Xz => lzma_stream(
                liblzma::stream::Stream::new_stream_decoder(LZMA_MEMLIMIT, 0),
                src,
                dst,
            ),
            Self::Lzma => lzma_stream(
                liblzma::stream::Stream::new_lzma_decoder(LZMA_MEMLIMIT),
                src,
                dst,
            ),
        }
    }
}

/// Runs one whole xz (or legacy lzma-alone) stream into `dst`.
fn lzma_stream(
    stream: Result<liblzma::stream::Stream, liblzma::stream::Error>,
    src: &[u8],
    dst: &mut [u8],
) -> Result<usize, String> {
    use liblzma::stream::{Action, Status};
    let mut s = stream.map_err(|e| e.to_string())?;
    // liblzma normally finishes in one call; loop only while it makes progress, so a
    // stuck stream ends the loop instead of spinning.
    loop {
        let (tin, tout) = (s.total_in(), s.total_out());
        let i = usize::try_from(tin).map_err(|e| e.to_string())?;
        let o = usize::try_from(tout).map_err(|e| e.to_string())?;
        let (Some(input), Some(output)) = (src.get(i..), dst.get_mut(o..)) else {
            return Err("decoder position outside its buffers".to_string());
        };
        let status = s
            .process(input, output, Action::Finish)
            .map_err(|e| e.to_string())?;
        if status == Status::StreamEnd {
            return usize::try_from(s.total_out()).map_err(|e| e.to_string());
        }
        if s.total_in() == tin && s.total_out() == tout {
            return Err("stream does not end within the block size".to_string());
        }
    }
}
