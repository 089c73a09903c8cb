//! `cascade load --generate … --out DIR`: generated data written as a bundle folder (with
//! `--model-from B`, a servable one).

use std::io::Write;
use std::path::Path;

use cascade_shared::embedding::{encode_header, encode_record};
use cascade_shared::keys::EntityKind;

use super::load::{chunks, label, progress};
use crate::generate::Generator;

/// Writes generated users and items as CEMB files in `out`, and with `model_from` the rest of a
/// bundle (model, reference scores and metadata relabelled to the generated bundle id).
pub fn write_bundle(generator: &Generator, out: &Path, model_from: Option<&Path>) -> anyhow::Result<()> {
    let spec = generator.spec();
    let bundle_id = spec.bundle_id();
    std::fs::create_dir_all(out)?;
    for (kind, count) in [(EntityKind::User, spec.users), (EntityKind::Item, spec.items)] {
        let path = out.join(format!("{}.emb", label(kind)));
        let partial = path.with_extension("emb.partial");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&partial)?);
        file.write_all(&encode_header(&bundle_id, spec.dim, count))?;
        let bar = progress(count, label(kind));
        let mut buffer = Vec::new();
        for range in chunks(count, 10_000) {
            let end = range.end;
            buffer.clear();
            for (id, vector) in generator.rows(kind, range) {
                encode_record(&mut buffer, &id, &vector);
            }
            file.write_all(&buffer)?;
            bar.set_position(end);
        }
        bar.finish_and_clear();
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        // Only a complete file gets the final name.
        std::fs::rename(&partial, &path)?;
        eprintln!("wrote {} ({count} vectors, dim {})", path.display(), spec.dim);
    }
    if let Some(source) = model_from {
        let mut metadata: serde_json::Value = serde_json::from_slice(&std::fs::read(source.join("metadata.json"))?)?;
        let model_dim = metadata["dim"].as_u64().unwrap_or(0);
        anyhow::ensure!(
            model_dim == spec.dim as u64,
            "--model-from {} has dim {model_dim}, the generated data dim {}",
            source.display(),
            spec.dim
        );
        metadata["bundle_id"] = serde_json::json!(bundle_id);
        metadata["dataset"] = serde_json::json!(format!("generated: {bundle_id}"));
        metadata["titles"] = serde_json::json!({});
        metadata["categories"] = serde_json::json!({});
        // Generated vectors have no sequence model or histories: the query is the user's vector,
        // pulled by the session (docs/bundle.md, a bundle without `query`).
        if let Some(fields) = metadata.as_object_mut() {
            fields.remove("query");
        }
        let popular: Vec<String> = (0..spec.items.min(100)).map(|n| format!("i{n}")).collect();
        metadata["popular"] = serde_json::json!(popular);
        std::fs::write(out.join("metadata.json"), serde_json::to_vec_pretty(&metadata)?)?;
        let mut reference: serde_json::Value = serde_json::from_slice(&std::fs::read(source.join("reference.json"))?)?;
        reference["bundle_id"] = serde_json::json!(bundle_id);
        std::fs::write(out.join("reference.json"), serde_json::to_vec(&reference)?)?;
        std::fs::copy(source.join("model.pt"), out.join("model.pt"))?;
        eprintln!("completed bundle {bundle_id} in {} with the model of {}", out.display(), source.display());
    }
    Ok(())
}
