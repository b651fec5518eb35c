//! The byte streams a dump passes through, each with fixed-size buffers: compression and
//! hashing, age encryption, a writer on another thread, and a copy that may fail alone.

pub mod codec;
pub mod crypt;
pub mod overlap;
pub mod shadow;
pub mod split;
