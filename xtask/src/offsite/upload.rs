//! A multipart upload as a `Write`: bytes go into a part buffer, each full part is sent
//! by a thread of its own while the next one fills, and the object appears only at
//! `complete()`. `abort()`, or dropping the writer before `complete()`, removes the upload
//! and its parts. Nothing is written on disk here: the caller records `upload_id()` (so a
//! run killed with SIGKILL can be cleaned up by the next one) and deletes the record.
//!
//! Part sizes ([`PartSizes`]): S3 allows 10,000 parts of 5 MiB to 5 GiB, all but the last
//! at least 5 MiB, and they need not be equal. A dump's size is not known while it streams,
//! so parts stay at one size for a while, then grow by 1 MiB every 40 parts; a part is sent
//! while the next fills, so two parts are the memory. A constant size cannot serve both
//! ends: 8 MiB parts stop at 78 GiB, and the 105 MiB that 1 TiB needs would cost 210 MiB
//! for every backup.
//!
//! - Without an expected size: 8 MiB for the first 1,000 parts (7.8 GiB), then growing.
//!   The 10,000 parts hold 1.04 TiB (the last ones 232 MiB). Memory: 16 MiB up to 7.8 GiB,
//!   26 MiB at 10 GiB, 52 MiB at 20 GiB, 138 MiB at 100 GiB.
//! - With one (the last backup's size, which the caller knows): 1.5 times it fits in at most
//!   5,000 parts of the first size, at least 8 MiB, and growth follows after. Memory at that
//!   size: 16 MiB up to 26 GiB, 32 MiB at 50 GiB, 62 MiB at 100 GiB. The 10,000 parts then
//!   hold at least 3 times the expected size (6 times up to 100 GiB, and 380 GiB at least).

use std::{
    io::{self, Write},
    mem,
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, channel, sync_channel},
    },
    thread::{self, JoinHandle},
};

use super::s3::{Error, Op, Store};

const MIB: usize = 1024 * 1024;
/// The smallest first size: S3's minimum is 5 MiB; 8 MiB (the AWS CLI's default) halves
/// the requests for the same memory.
pub const FIRST_PART: usize = 8 * MIB;
/// Parts of the first size at least, before they start to grow.
const GROW_AFTER: u32 = 1000;
/// At most this many parts of the first size, with an expected size: the rest grow.
const PLATEAU_MAX: u32 = 5000;
/// Every this many parts after the first ones, parts grow by 1 MiB.
const GROW_EVERY: u32 = 40;
/// S3's limit on part numbers.
pub const MAX_PARTS: u32 = 10_000;
/// Below S3's 5 GiB per part, with room for the growth.
const FIRST_PART_MAX: usize = 4 * 1024 * MIB;

/// The size of every part of one upload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PartSizes {
    first: usize,
    grow_after: u32,
}

impl PartSizes {
    /// Sized for about `expected` bytes (the last backup's size), or for anything up to
    /// 1 TiB without it: see the module's comment.
    pub fn new(expected: Option<u64>) -> PartSizes {
        let Some(expected) = expected else { return PartSizes { first: FIRST_PART, grow_after: GROW_AFTER } };
        let room = expected.saturating_mul(3) / 2;
        let first = (room.div_ceil(u64::from(PLATEAU_MAX)).div_ceil(MIB as u64) as usize * MIB)
            .clamp(FIRST_PART, FIRST_PART_MAX);
        let grow_after = room.div_ceil(first as u64).clamp(u64::from(GROW_AFTER), u64::from(PLATEAU_MAX)) as u32;
        PartSizes { first, grow_after }
    }

    /// The size of part `number` (1-based); the last part of an upload is what is left.
    pub fn part(&self, number: u32) -> usize {
        self.first + (number.saturating_sub(self.grow_after + 1) / GROW_EVERY) as usize * MIB
    }

    /// The most an upload can hold: every part full.
    pub fn capacity(&self) -> u64 {
        (1..=MAX_PARTS).map(|n| self.part(n) as u64).sum()
    }
}

/// What `complete()` made.
#[derive(Clone, Debug, PartialEq)]
pub struct Completed {
    pub bytes: u64,
    pub parts: u32,
    /// The object's ETag as the store gives it; its form differs between stores, so it
    /// is an identity, not a checksum (the size is checked with HeadObject instead).
    pub etag: String,
}

/// Where the parts go: a multipart upload in a store, or a recorder in the tests.
trait Parts: Send + Sync + 'static {
    fn send(&self, number: u32, data: &[u8]) -> Result<String, Error>;
    fn complete(&self, parts: &[(u32, String)]) -> Result<String, Error>;
    fn abort(&self) -> Result<(), Error>;
    /// An error about this upload that is not the store's (a limit, a dead thread).
    fn invalid(&self, op: Op, detail: String) -> Error;
}

struct Remote {
    store: Store,
    name: String,
    upload_id: String,
}

impl Parts for Remote {
    fn send(&self, number: u32, data: &[u8]) -> Result<String, Error> {
        self.store.upload_part(&self.name, &self.upload_id, number, data)
    }

    fn complete(&self, parts: &[(u32, String)]) -> Result<String, Error> {
        self.store.complete_multipart_upload(&self.name, &self.upload_id, parts)
    }

    fn abort(&self) -> Result<(), Error> {
        self.store.abort_multipart_upload(&self.name, &self.upload_id)
    }

    fn invalid(&self, op: Op, detail: String) -> Error {
        self.store.invalid(op, &self.name, detail)
    }
}

type Sent = Result<Vec<(u32, String)>, Error>;

pub struct Upload {
    name: String,
    upload_id: String,
    parts: Arc<dyn Parts>,
    sizes: PartSizes,
    buf: Vec<u8>,
    /// The number of the part being filled.
    number: u32,
    bytes: u64,
    /// Full parts to the sending thread; a rendezvous, so that at most one part is in
    /// flight while the next fills.
    queue: Option<SyncSender<(u32, Vec<u8>)>>,
    sender: Option<JoinHandle<Sent>>,
    /// Buffers the thread is done with, filled again rather than allocated anew.
    spare: Receiver<Vec<u8>>,
    /// Completed or aborted: nothing is left to clean up.
    done: bool,
    /// Why the upload failed: every later write and `complete()` say so again.
    failed: Option<Error>,
}

impl Upload {
    /// Starts a multipart upload of `name` under the store's prefix. Record
    /// [`Upload::upload_id`] before writing: it is what cleans up after a killed run.
    /// `expected`: about how large the stream will be (the last backup's size), which
    /// keeps the parts small up to there; see [`PartSizes`].
    pub fn start(store: &Store, name: &str, expected: Option<u64>) -> Result<Upload, Error> {
        let upload_id = store.create_multipart_upload(name)?;
        let remote = Remote { store: store.clone(), name: name.to_owned(), upload_id: upload_id.clone() };
        Ok(Upload::with_parts(name, &upload_id, Arc::new(remote), PartSizes::new(expected)))
    }

    fn with_parts(name: &str, upload_id: &str, parts: Arc<dyn Parts>, sizes: PartSizes) -> Upload {
        let (queue, full) = sync_channel::<(u32, Vec<u8>)>(0);
        let (give_back, spare) = channel();
        let target = Arc::clone(&parts);
        let sender = thread::spawn(move || -> Sent {
            let mut sent = Vec::new();
            for (number, data) in full {
                sent.push((number, target.send(number, &data)?));
                let _ = give_back.send(data);
            }
            Ok(sent)
        });
        Upload {
            name: name.to_owned(),
            upload_id: upload_id.to_owned(),
            parts,
            buf: Vec::with_capacity(sizes.part(1)),
            sizes,
            number: 1,
            bytes: 0,
            queue: Some(queue),
            sender: Some(sender),
            spare,
            done: false,
            failed: None,
        }
    }

    pub fn upload_id(&self) -> &str {
        &self.upload_id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Hands the buffer to the sending thread (waiting while the previous part is in
    /// flight) and starts the next part.
    fn send_part(&mut self) -> Result<(), Error> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let mut next = self.spare.try_recv().unwrap_or_default();
        next.clear();
        next.reserve(self.sizes.part(self.number + 1));
        let full = mem::replace(&mut self.buf, next);
        let queue =
            self.queue.as_ref().ok_or_else(|| self.parts.invalid(Op::UploadPart, "the upload has ended".into()))?;
        if queue.send((self.number, full)).is_err() {
            // The thread stopped: its error says why.
            let err =
                self.join().err().unwrap_or_else(|| self.parts.invalid(Op::UploadPart, "the sender stopped".into()));
            self.failed = Some(err.clone());
            return Err(err);
        }
        self.number += 1;
        Ok(())
    }

    /// Ends the queue and waits for the sending thread: every part's number and ETag.
    fn join(&mut self) -> Sent {
        drop(self.queue.take());
        match self.sender.take() {
            Some(sender) => sender
                .join()
                .unwrap_or_else(|_| Err(self.parts.invalid(Op::UploadPart, "the sending thread panicked".into()))),
            None => Err(self.parts.invalid(Op::UploadPart, "the upload has ended".into())),
        }
    }

    /// Sends what is left as the last part, then joins the parts into the object, which
    /// appears only now. On failure the upload is aborted (when the writer is dropped).
    pub fn complete(mut self) -> Result<Completed, Error> {
        if let Some(err) = self.failed.take() {
            return Err(err);
        }
        // An empty stream still needs one part: an object of 0 bytes.
        if !self.buf.is_empty() || self.number == 1 {
            self.send_part()?;
        }
        let parts = self.join()?;
        let etag = self.parts.complete(&parts)?;
        self.done = true;
        Ok(Completed { bytes: self.bytes, parts: parts.len() as u32, etag })
    }

    /// Drops the upload and every part sent, after the part in flight has landed (a part
    /// that lands after the abort would otherwise keep using space).
    pub fn abort(mut self) -> Result<(), Error> {
        self.abort_now()
    }

    fn abort_now(&mut self) -> Result<(), Error> {
        self.done = true;
        let _ = self.join();
        self.parts.abort()
    }
}

impl Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if let Some(err) = &self.failed {
            return Err(err.clone().into());
        }
        if self.done || self.queue.is_none() {
            return Err(self.parts.invalid(Op::UploadPart, "the upload has ended".into()).into());
        }
        if self.number > MAX_PARTS {
            let most = self.sizes.capacity() as f64 / (1u64 << 40) as f64;
            let detail = format!("the stream is larger than S3's 10,000 parts hold here ({most:.2} TiB)");
            return Err(self.parts.invalid(Op::UploadPart, detail).into());
        }
        let size = self.sizes.part(self.number);
        let room = size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        self.bytes += n as u64;
        if self.buf.len() == size {
            self.send_part()?;
        }
        Ok(n)
    }

    /// Parts are sent as they fill; a flush cannot send a part smaller than 5 MiB.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Upload {
    /// Not completed: nothing may stay behind. Best effort; a failure here leaves the
    /// upload to the next run, which finds it by the recorded id.
    fn drop(&mut self) {
        if !self.done {
            let _ = self.abort_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::offsite::{
        credentials::{Credentials, Source},
        s3::{Addressing, Class, Config, Location},
    };

    const GIB: u64 = 1 << 30;

    /// The part being sent and the one filling, once `total` bytes were written.
    fn buffers_at(sizes: PartSizes, total: u64) -> usize {
        let (mut n, mut sum) = (1, 0u64);
        while sum + sizes.part(n) as u64 <= total {
            sum += sizes.part(n) as u64;
            n += 1;
        }
        sizes.part(n) + sizes.part(n.saturating_sub(1).max(1))
    }

    fn check_limits(sizes: PartSizes) {
        for n in 1..=MAX_PARTS {
            let size = sizes.part(n);
            assert!((5 * MIB..=5 * 1024 * MIB).contains(&size), "{sizes:?} part {n}: {size}");
            assert!(n == 1 || size >= sizes.part(n - 1), "sizes never shrink");
        }
    }

    #[test]
    fn without_an_expected_size_a_terabyte_fits_in_10000_parts() {
        let sizes = PartSizes::new(None);
        check_limits(sizes);
        assert_eq!(
            (sizes.part(1), sizes.part(1000), sizes.part(1040), sizes.part(1041)),
            (8 * MIB, 8 * MIB, 8 * MIB, 9 * MIB)
        );
        assert!(sizes.capacity() >= 1 << 40, "{} GiB", sizes.capacity() / GIB);
        assert_eq!(sizes.part(MAX_PARTS), 232 * MIB, "the largest part");
        assert_eq!(buffers_at(sizes, 700 * MIB as u64), 16 * MIB, "today's plain dump");
        assert_eq!(buffers_at(sizes, 7 * GIB), 16 * MIB);
        assert_eq!(buffers_at(sizes, 20 * GIB), 52 * MIB);
    }

    #[test]
    fn an_expected_size_keeps_parts_small_up_to_it_with_room_beyond() {
        for (expected, memory) in
            [(0, 16), (700 * MIB as u64, 16), (20 * GIB, 16), (26 * GIB, 16), (50 * GIB, 32), (100 * GIB, 62)]
        {
            let sizes = PartSizes::new(Some(expected));
            check_limits(sizes);
            assert_eq!(buffers_at(sizes, expected), memory * MIB, "{} GiB expected", expected / GIB);
            assert!(sizes.capacity() >= (6 * expected).max(380 * GIB), "{sizes:?}: {} GiB", sizes.capacity() / GIB);
        }
        assert_eq!(PartSizes::new(Some(1)), PartSizes::new(None), "a small expected size is the default");
        for expected in [1 << 40, 5 << 40] {
            let sizes = PartSizes::new(Some(expected));
            check_limits(sizes);
            assert!(sizes.capacity() >= 3 * expected, "{sizes:?}");
        }
    }

    fn store() -> Store {
        let config = Config {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: "garage".into(),
            location: Location::parse("s3://b/p").unwrap(),
            addressing: Addressing::Path,
        };
        Store::new(config, Credentials::new("id", "secret", None, Source::Environment)).unwrap()
    }

    /// Records what a store would have received; fails the part numbered `fail_at`.
    #[derive(Default)]
    struct Recorder {
        parts: Mutex<Vec<(u32, Vec<u8>)>>,
        completed: Mutex<Option<Vec<(u32, String)>>>,
        aborted: Mutex<u32>,
        fail_at: Option<u32>,
    }

    impl Parts for Recorder {
        fn send(&self, number: u32, data: &[u8]) -> Result<String, Error> {
            if Some(number) == self.fail_at {
                return Err(store().invalid(Op::UploadPart, "x", format!("part {number} refused")));
            }
            self.parts.lock().unwrap().push((number, data.to_vec()));
            Ok(format!("\"etag-{number}\""))
        }

        fn complete(&self, parts: &[(u32, String)]) -> Result<String, Error> {
            *self.completed.lock().unwrap() = Some(parts.to_vec());
            Ok("\"whole\"".into())
        }

        fn abort(&self) -> Result<(), Error> {
            *self.aborted.lock().unwrap() += 1;
            Ok(())
        }

        fn invalid(&self, op: Op, detail: String) -> Error {
            store().invalid(op, "x", detail)
        }
    }

    fn stream(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn full_parts_go_out_in_order_and_the_rest_is_the_last() {
        let recorder = Arc::new(Recorder::default());
        let mut upload = Upload::with_parts("x", "id", recorder.clone(), PartSizes::new(None));
        let data = stream(2 * FIRST_PART + 12345);
        for chunk in data.chunks(256 * 1024 + 3) {
            upload.write_all(chunk).unwrap();
        }
        assert_eq!(upload.bytes(), data.len() as u64);
        let done = upload.complete().unwrap();
        assert_eq!(done, Completed { bytes: data.len() as u64, parts: 3, etag: "\"whole\"".into() });
        let parts = recorder.parts.lock().unwrap();
        assert_eq!(
            parts.iter().map(|(n, d)| (*n, d.len())).collect::<Vec<_>>(),
            [(1, FIRST_PART), (2, FIRST_PART), (3, 12345)]
        );
        assert_eq!(parts.iter().flat_map(|(_, d)| d.clone()).collect::<Vec<_>>(), data);
        let completed = recorder.completed.lock().unwrap().clone().unwrap();
        assert_eq!(completed, [(1, "\"etag-1\"".into()), (2, "\"etag-2\"".into()), (3, "\"etag-3\"".into())]);
        assert_eq!(*recorder.aborted.lock().unwrap(), 0);
    }

    #[test]
    fn an_exact_multiple_sends_no_empty_last_part_and_an_empty_stream_sends_one() {
        let recorder = Arc::new(Recorder::default());
        let mut upload = Upload::with_parts("x", "id", recorder.clone(), PartSizes::new(None));
        upload.write_all(&stream(FIRST_PART)).unwrap();
        assert_eq!(upload.complete().unwrap().parts, 1);
        assert_eq!(recorder.parts.lock().unwrap().len(), 1);

        let recorder = Arc::new(Recorder::default());
        let upload = Upload::with_parts("x", "id", recorder.clone(), PartSizes::new(None));
        assert_eq!(upload.complete().unwrap().parts, 1);
        assert_eq!(recorder.parts.lock().unwrap()[0], (1, vec![]));
    }

    #[test]
    fn a_refused_part_fails_a_later_write_or_complete_and_the_upload_is_aborted() {
        let recorder = Arc::new(Recorder { fail_at: Some(2), ..Recorder::default() });
        let mut upload = Upload::with_parts("x", "id", recorder.clone(), PartSizes::new(None));
        let data = stream(FIRST_PART);
        let mut failed = None;
        for _ in 0..5 {
            if let Err(err) = upload.write_all(&data) {
                failed = Some(err);
                break;
            }
        }
        let err = failed.expect("the writer learns of the refused part");
        let s3 = err.get_ref().and_then(|e| e.downcast_ref::<Error>()).expect("the S3 error inside");
        assert!(s3.to_string().contains("part 2 refused"), "{s3}");
        assert_eq!(s3.class(), Class::Other);
        let again = upload.write_all(&data).unwrap_err().to_string();
        assert!(again.contains("part 2 refused"), "later writes say why: {again}");
        let err = upload.complete().unwrap_err();
        assert!(err.to_string().contains("part 2 refused"), "so does complete: {err}");
        assert_eq!(*recorder.aborted.lock().unwrap(), 1, "the failed upload was aborted");
        assert!(recorder.completed.lock().unwrap().is_none());

        let recorder = Arc::new(Recorder { fail_at: Some(1), ..Recorder::default() });
        let mut upload = Upload::with_parts("x", "id", recorder.clone(), PartSizes::new(None));
        upload.write_all(b"small").unwrap();
        assert!(upload.complete().unwrap_err().to_string().contains("part 1 refused"));
        assert_eq!(*recorder.aborted.lock().unwrap(), 1, "a failed complete aborts");
    }

    #[test]
    fn abort_and_drop_abort_once_and_complete_never() {
        let recorder = Arc::new(Recorder::default());
        let mut upload = Upload::with_parts("x", "id", recorder.clone(), PartSizes::new(None));
        upload.write_all(&stream(FIRST_PART + 1)).unwrap();
        upload.abort().unwrap();
        assert_eq!(*recorder.aborted.lock().unwrap(), 1);
        assert_eq!(recorder.parts.lock().unwrap().len(), 1, "the part in flight landed before the abort");

        let recorder = Arc::new(Recorder::default());
        let mut upload = Upload::with_parts("x", "id", recorder.clone(), PartSizes::new(None));
        upload.write_all(b"abc").unwrap();
        upload.complete().unwrap();
        assert_eq!(*recorder.aborted.lock().unwrap(), 0, "a completed upload is left alone");
    }
}
