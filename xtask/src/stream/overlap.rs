//! A writer that hands its chunks to another thread, so the producer (pg_dump's pipe)
//! keeps flowing while this side compresses, hashes and writes. The queue is a few
//! chunks deep, so memory stays bounded however large the stream.

use std::{
    io::{self, Write},
    sync::mpsc::{SyncSender, sync_channel},
    thread::{self, JoinHandle},
};

/// Chunks in flight; with 256 KiB reads that is at most 2 MiB.
const DEPTH: usize = 8;

pub struct Overlapped<T> {
    chunks: Option<SyncSender<Vec<u8>>>,
    worker: Option<JoinHandle<io::Result<T>>>,
}

impl<T: Send + 'static> Overlapped<T> {
    /// Runs `sink` on a thread: it writes every chunk, then `finish` turns it into `T`.
    pub fn spawn<W, F>(mut sink: W, finish: F) -> Overlapped<T>
    where
        W: Write + Send + 'static,
        F: FnOnce(W) -> io::Result<T> + Send + 'static,
    {
        let (chunks, queue) = sync_channel::<Vec<u8>>(DEPTH);
        let worker = thread::spawn(move || {
            for chunk in queue {
                sink.write_all(&chunk)?;
            }
            finish(sink)
        });
        Overlapped { chunks: Some(chunks), worker: Some(worker) }
    }

    /// Ends the stream and waits for the other side: its result, or its first error.
    pub fn finish(mut self) -> io::Result<T> {
        self.join()
    }

    fn join(&mut self) -> io::Result<T> {
        drop(self.chunks.take());
        match self.worker.take() {
            Some(worker) => worker.join().unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked"))),
            None => Err(io::Error::other("already finished")),
        }
    }
}

impl<T> Write for Overlapped<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let chunks = self.chunks.as_ref().ok_or_else(|| io::Error::other("already finished"))?;
        // The worker hangs up only after an error, which `finish` returns.
        chunks.send(buf.to_vec()).map_err(|_| io::Error::other("the writer stopped after an error"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T> Drop for Overlapped<T> {
    fn drop(&mut self) {
        drop(self.chunks.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_every_byte_in_order() {
        let mut out = Overlapped::spawn(Vec::new(), Ok);
        for i in 0..1000u32 {
            out.write_all(&i.to_le_bytes()).unwrap();
        }
        let got = out.finish().unwrap();
        let want: Vec<u8> = (0..1000u32).flat_map(u32::to_le_bytes).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_sinks_error_comes_back_from_finish() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "No space left on device"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = Overlapped::spawn(Full, |_| Ok(()));
        let mut write_failed = false;
        for _ in 0..100 {
            write_failed |= out.write_all(b"data").is_err();
        }
        assert!(write_failed, "the producer learns that the writer stopped");
        assert_eq!(out.finish().unwrap_err().kind(), io::ErrorKind::StorageFull);
    }
}
