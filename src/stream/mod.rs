//! Server-sent event streams: parsing them (`sse`), assembling a streamed chat completion into a
//! plain one for the cache (`assemble`), passing a live stream through while recording it
//! (`record`), and replaying a stored answer as a stream (`replay`).

pub mod assemble;
pub mod record;
pub mod replay;
pub mod sse;
