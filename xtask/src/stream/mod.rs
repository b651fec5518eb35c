//! The byte streams a dump passes through, each with fixed-size buffers: compression and
//! hashing, age encryption, and a writer on another thread.

pub mod codec;
pub mod crypt;
pub mod overlap;
