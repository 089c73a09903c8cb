//! Tests of origin components against real dependencies (Redis servers and a Redis Cluster the
//! tests create, the TorchScript model of the test bundle, the training script), one test binary:
//! these link libtorch and FAISS through `cascade-origin`, so they share one link (CI time).

mod cluster;
mod data_plane;
mod ranker;
mod remote_ranker;
mod reshard;
mod training;
