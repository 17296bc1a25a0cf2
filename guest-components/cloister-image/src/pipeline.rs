//! One layer, one pass: download → digest check → decrypt → decompress → diff_id check → untar.
//!
//! The download runs as an async task that feeds a small bounded channel (back-pressure: at most
//! [`CHANNEL_DEPTH`] chunks in flight per layer), and resumes with a `Range` request when the
//! connection breaks. The rest is a chain of `Read`ers on a blocking thread. Every check that
//! needs the whole stream (blob digest and size, ocicrypt HMAC and plaintext digest, diff_id)
//! fails at EOF as a read error; the unpacker writes into a private directory that the caller
//! deletes on any failure, so unverified content is never exposed.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::digest::{Digest, VerifyingReader};
use crate::error::ImageError;
use crate::manifest::Compression;
use crate::reference::Reference;
use crate::registry::{Registry, retryable};
use crate::unpack::{LayerStats, UnpackOptions, unpack_layer};

/// Chunks buffered between the download and the unpacker, per layer.
pub const CHANNEL_DEPTH: usize = 16;

/// Wraps the ciphertext reader in a decrypting reader.
pub type DecryptWrap = Box<dyn FnOnce(Box<dyn Read + Send>) -> Result<Box<dyn Read + Send>, ImageError> + Send>;

/// What the blocking side needs to process a layer.
pub struct LayerJob {
    /// The blob digest (of what the registry serves).
    pub digest: Digest,
    /// Declared blob size.
    pub size: u64,
    /// The diff_id from the config.
    pub diff_id: Digest,
    /// Compression of the (decrypted) blob.
    pub compression: Compression,
    /// For encrypted layers.
    pub decrypt: Option<DecryptWrap>,
    /// An empty directory to unpack into.
    pub dest: PathBuf,
    /// Ownership handling.
    pub opts: UnpackOptions,
}

struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, ImageError>>,
    cur: Bytes,
    done: bool,
    /// Set when the download failed: every later read fails too (never a clean EOF).
    failed: Option<String>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if let Some(why) = &self.failed {
                return Err(io::Error::other(why.clone()));
            }
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => {
                    self.done = true;
                    self.failed = Some(e.to_string());
                    return Err(io::Error::other(e));
                }
                None => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// The blob-level verifier, shared so that after a failure further up the chain the rest of the
/// blob can still be read and its digest reported: a tampered blob is named as such even when
/// the decompressor or the tar parser trips over it first.
struct Shared<R>(Arc<Mutex<R>>);

impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.lock() {
            Ok(mut r) => r.read(buf),
            Err(_) => Err(io::Error::other("blob reader poisoned")),
        }
    }
}

/// Keeps the first error of the chain below it (with its typed cause) and passes on a copy.
struct Tap<R> {
    inner: R,
    slot: Arc<Mutex<Option<io::Error>>>,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                if let Ok(mut s) = self.slot.lock()
                    && s.is_none()
                {
                    *s = Some(e);
                }
                Err(copy)
            }
        }
    }
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "tar",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

/// Maps a read error of the chain to what went wrong.
fn classify(layer: Digest, compression: Compression, e: io::Error) -> ImageError {
    let text = e.to_string();
    match e.into_inner() {
        Some(inner) => match inner.downcast::<ImageError>() {
            Ok(img) => *img,
            Err(inner) => match inner.downcast::<cloister_ocicrypt::OcicryptError>() {
                Ok(oc) => ImageError::Decrypt { layer, cause: *oc },
                Err(inner) => {
                    ImageError::Decompress { layer, compression: compression_name(compression), why: inner.to_string() }
                }
            },
        },
        None => ImageError::Decompress { layer, compression: compression_name(compression), why: text },
    }
}

/// Runs the blocking side of one layer, reading the download from `rx`.
pub fn run_layer(job: LayerJob, rx: mpsc::Receiver<Result<Bytes, ImageError>>) -> Result<LayerStats, ImageError> {
    let chan = ChannelReader { rx, cur: Bytes::new(), done: false, failed: None };
    let blob = VerifyingReader::new(chan, job.digest, Some(job.size), format!("layer {}", job.digest));
    let plain: Box<dyn Read + Send> = match job.decrypt {
        Some(wrap) => wrap(Box::new(blob))?,
        None => Box::new(blob),
    };
    let plain = Arc::new(Mutex::new(plain));
    let shared = Shared(plain.clone());
    let tar_stream: Box<dyn Read + Send> = match job.compression {
        Compression::None => Box::new(shared),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(shared)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(shared).map_err(|e| ImageError::Decompress {
                layer: job.digest,
                compression: "zstd",
                why: e.to_string(),
            })?)
        }
    };
    let diff =
        VerifyingReader::new(tar_stream, job.diff_id, None, format!("layer {} uncompressed tar (diff_id)", job.digest));
    let slot = Arc::new(Mutex::new(None));
    let tap = Tap { inner: diff, slot: slot.clone() };
    let typed = |slot: &Arc<Mutex<Option<io::Error>>>| slot.lock().ok().and_then(|mut s| s.take());
    // After a failure: if the blob itself is wrong (digest, size, HMAC), that is the error to
    // report, whichever stage tripped over it first. Reading the rest of the blob finds out.
    let (layer, compression) = (job.digest, job.compression);
    let blob_fault = |plain: &Arc<Mutex<Box<dyn Read + Send>>>| -> Option<ImageError> {
        let mut p = plain.lock().ok()?;
        match io::copy(&mut *p, &mut io::sink()) {
            Err(e) => match classify(layer, compression, e) {
                root @ (ImageError::DigestMismatch { .. }
                | ImageError::SizeMismatch { .. }
                | ImageError::Decrypt { .. }) => Some(root),
                _ => None,
            },
            Ok(_) => None,
        }
    };
    let result = unpack_layer(job.digest, tap, &job.dest, job.opts);
    let result = result.map_err(|e| match blob_fault(&plain) {
        Some(root) => root,
        None => e,
    });
    match result {
        Ok((stats, mut tap)) => {
            // The tar end marker is not the end of the stream: read the rest so every digest,
            // the HMAC and the diff_id are checked over all of it.
            if let Err(e) = io::copy(&mut tap, &mut io::sink()) {
                let e = typed(&slot).unwrap_or(e);
                return Err(blob_fault(&plain).unwrap_or_else(|| classify(job.digest, job.compression, e)));
            }
            if !tap.inner.verified() {
                return Err(ImageError::BadTar { layer: job.digest, why: "the stream did not reach its end".into() });
            }
            Ok(stats)
        }
        Err(e @ (ImageError::DigestMismatch { .. } | ImageError::SizeMismatch { .. } | ImageError::Decrypt { .. })) => {
            Err(e)
        }
        Err(e) => match typed(&slot) {
            Some(io_err) => Err(classify(job.digest, job.compression, io_err)),
            None => Err(e),
        },
    }
}

/// Downloads a blob into `tx`, resuming with `Range` after a broken connection. Errors are sent
/// down the channel; a closed channel (consumer failed) ends the task.
pub async fn download(
    reg: Registry,
    r: Reference,
    digest: Digest,
    size: u64,
    tx: mpsc::Sender<Result<Bytes, ImageError>>,
) {
    let url = reg.blob_url(&r, &digest);
    let retries = reg.options().retries;
    let backoff = reg.options().backoff;
    let mut offset = 0u64;
    let mut attempt = 0u32;
    'request: loop {
        let (mut resp, start) = match reg.blob_response(&r, &digest, offset).await {
            Ok(x) => x,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        if offset > 0 {
            tracing::info!(%url, offset, ranged = start == offset, "resuming the layer download");
        }
        let mut skip = offset - start;
        loop {
            match reg.next_chunk(&url, &mut resp).await {
                Ok(Some(mut b)) => {
                    if skip > 0 {
                        let k = usize::try_from(skip).unwrap_or(usize::MAX).min(b.len());
                        b = b.slice(k..);
                        skip -= k as u64;
                        if b.is_empty() {
                            continue;
                        }
                    }
                    offset += b.len() as u64;
                    if tx.send(Ok(b)).await.is_err() {
                        return;
                    }
                    if offset > size {
                        // The consumer fails on the oversize; do not keep downloading.
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) if retryable(&e) && attempt < retries => {
                    tracing::warn!(%url, error = %e, offset, "layer download broke; resuming");
                    tokio::time::sleep(backoff * 2u32.saturating_pow(attempt)).await;
                    attempt += 1;
                    continue 'request;
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    }
}
