//! The ranker's input rows: the layout `scripts/train.py` trains with, built here for Rust.
//!
//! One row per candidate, `3·dim + 7` floats: the user embedding, the item embedding, their
//! element-wise product, the page one-hot (order of [`PAGES`]) and the device one-hot (order of
//! [`DEVICES`]). The bundle's `input_layout` must equal [`input_layout`] or the bundle is refused.

use cascade_shared::segment::{DEVICES, Device, PAGES, Page};

/// Columns per row for embeddings of `dim`.
pub fn input_width(dim: usize) -> usize {
    3 * dim + PAGES.len() + DEVICES.len()
}

/// Column names, as the training script writes them in `metadata.json`.
pub fn input_layout(dim: usize) -> Vec<String> {
    let mut layout = vec![format!("user[{dim}]"), format!("item[{dim}]"), format!("user*item[{dim}]")];
    layout.extend(PAGES.iter().map(|p| format!("page={p}")));
    layout.extend(DEVICES.iter().map(|d| format!("device={d}")));
    layout
}

/// Appends one row per item to `out` (row-major); every item slice must have `user.len()` floats.
pub fn build_rows<'a>(
    user: &[f32],
    items: impl IntoIterator<Item = &'a [f32]>,
    page: Page,
    device: Device,
    out: &mut Vec<f32>,
) {
    let mut context = [0.0f32; PAGES.len() + DEVICES.len()];
    context[page.index()] = 1.0;
    context[PAGES.len() + device.index()] = 1.0;
    for item in items {
        debug_assert_eq!(item.len(), user.len());
        out.extend_from_slice(user);
        out.extend_from_slice(item);
        out.extend(user.iter().zip(item).map(|(u, i)| u * i));
        out.extend_from_slice(&context);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_layout() {
        let mut rows = Vec::new();
        let page = Page::parse("browse").unwrap();
        let device = Device::parse("tablet").unwrap();
        build_rows(&[1.0, 2.0], [[3.0, 4.0].as_slice(), [5.0, 6.0].as_slice()], page, device, &mut rows);
        assert_eq!(rows.len(), 2 * input_width(2));
        assert_eq!(&rows[..13], &[1.0, 2.0, 3.0, 4.0, 3.0, 8.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(&rows[13..19], &[1.0, 2.0, 5.0, 6.0, 5.0, 12.0]);
        assert_eq!(input_layout(2).len(), 3 + 7);
    }
}
