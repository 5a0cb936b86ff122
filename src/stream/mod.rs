//! Server-sent event streams: parsing them (`sse`), assembling a streamed chat completion into a
//! plain one for the cache (`assemble`), passing a live stream through while recording it
//! (`record`), replaying a stored answer as a stream (`replay`), and reading a stream's token
//! usage for the request log (`usage`).

pub mod assemble;
pub mod record;
pub mod replay;
pub mod sse;
pub mod usage;
