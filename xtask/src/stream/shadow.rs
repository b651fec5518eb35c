//! A second copy of a stream that may fail without failing the first: the offsite upload
//! beside the local backup file. The store going down must never cost the local backup.

use std::{
    io::{self, Write},
    sync::{Arc, Mutex},
};

/// Writes to `first` (whose errors are the stream's) and then to `second`, if any.
pub struct Tee<A, B> {
    pub first: A,
    pub second: Option<B>,
}

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.first.write_all(buf)?;
        if let Some(second) = &mut self.second {
            second.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.first.flush()?;
        if let Some(second) = &mut self.second {
            second.flush()?;
        }
        Ok(())
    }
}

/// A writer whose failure is kept rather than returned: the first error drops the inner
/// writer (an upload aborts when dropped) and every later write is accepted and ignored.
/// Clones share the state: the stream writes through one, the owner takes the writer
/// (or its error) back through another once the stream is done.
pub struct Shadow<S>(Arc<Mutex<State<S>>>);

enum State<S> {
    Running(S),
    Failed(io::Error),
    Taken,
}

impl<S> Clone for Shadow<S> {
    fn clone(&self) -> Self {
        Shadow(Arc::clone(&self.0))
    }
}

impl<S: Write> Shadow<S> {
    pub fn new(inner: S) -> Shadow<S> {
        Shadow(Arc::new(Mutex::new(State::Running(inner))))
    }

    /// The writer, if every write to it succeeded; else the first error. Once.
    pub fn take(&self) -> io::Result<S> {
        let mut state = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match std::mem::replace(&mut *state, State::Taken) {
            State::Running(inner) => Ok(inner),
            State::Failed(err) => Err(err),
            State::Taken => Err(io::Error::other("the copy was already taken")),
        }
    }
}

impl<S: Write> Write for Shadow<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let State::Running(inner) = &mut *state
            && let Err(err) = inner.write_all(buf)
        {
            // Dropping the writer here (not at the end) stops the upload at once.
            *state = State::Failed(err);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Breaks(usize, Vec<u8>);

    impl Write for Breaks {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.1.len() + buf.len() > self.0 {
                return Err(io::Error::other("store down"));
            }
            self.1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_copy_never_fails_the_stream() {
        let shadow = Shadow::new(Breaks(5, Vec::new()));
        let mut tee = Tee { first: Vec::new(), second: Some(shadow.clone()) };
        tee.write_all(b"abc").unwrap();
        tee.write_all(b"defgh").unwrap();
        tee.write_all(b"ij").unwrap();
        assert_eq!(tee.first, b"abcdefghij");
        assert_eq!(shadow.take().err().map(|e| e.to_string()).as_deref(), Some("store down"));
    }

    #[test]
    fn a_whole_copy_comes_back() {
        let shadow = Shadow::new(Breaks(100, Vec::new()));
        let mut tee = Tee { first: io::sink(), second: Some(shadow.clone()) };
        tee.write_all(b"hello").unwrap();
        drop(tee);
        assert_eq!(shadow.take().unwrap().1, b"hello");
        assert!(shadow.take().is_err(), "taken once");
    }
}
