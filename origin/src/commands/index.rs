//! `cascade index build`: train and write the FAISS index over a bundle's items, so `serve`
//! starts without building it.

use std::path::Path;
use std::time::Instant;

use faiss::Index;

use crate::bundle::Bundle;
use crate::retrieval::{auto_factory, build_index, write};

/// Builds the index with `factory` (or `auto`) and writes it to the bundle's `items.faiss`.
pub fn build(bundle_dir: &Path, factory: &str) -> anyhow::Result<()> {
    let bundle = Bundle::load(bundle_dir)?;
    let factory = if factory == "auto" { auto_factory(bundle.items.ids.len()) } else { factory.to_string() };
    let started = Instant::now();
    let index = build_index(&factory, bundle.metadata.dim, &bundle.items.values)?;
    write(&index, &bundle.index_path())?;
    eprintln!(
        "{}: {factory} over {} items, dim {}, built in {:.2} s",
        bundle.index_path().display(),
        index.ntotal(),
        bundle.metadata.dim,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
