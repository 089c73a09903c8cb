//! The `cascade` subcommands. Each is a thin function over the library.

pub mod index;
pub mod load;
pub mod plan;
pub mod precompute;
pub mod reshard;
pub mod serve;
