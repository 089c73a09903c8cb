//! Embedding encodings: the export file the training script writes, and the Redis value.
//!
//! ## Value (Redis, and each record's payload)
//! `dim` little-endian IEEE-754 float32s, nothing else: `dim * 4` bytes.
//!
//! ## Export file (`users.emb`, `items.emb`)
//! All integers little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `CEMB` |
//! | 4 | 2 | format version, `1` |
//! | 6 | 2 | value encoding, `0` = float32 |
//! | 8 | 4 | `dim` |
//! | 12 | 8 | `count`, the number of records |
//! | 20 | 2 | `L`, length of the bundle id |
//! | 22 | L | bundle id, UTF-8 |
//! | 22+L | … | `count` records: `u16` id length, the id (UTF-8), `dim * 4` bytes of values |
//!
//! The position of an item in `items.emb` (0-based) is its FAISS label: the id map is the file's
//! order. The bundle id ties the file to the model it was trained with; the origin refuses a file
//! whose bundle id differs from the bundle's metadata.

/// File magic.
pub const MAGIC: &[u8; 4] = b"CEMB";
/// The only format version so far.
pub const FORMAT_VERSION: u16 = 1;
/// Encoding tag for float32 values.
pub const ENCODING_F32: u16 = 0;

/// A malformed export file or value; `offset` is the byte where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The header is wrong.
    #[error("bad embedding file header at offset {offset}: {message}")]
    Header {
        /// Byte offset.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// The file ends inside a record.
    #[error("embedding file truncated at offset {offset} (record {record} of {count})")]
    Truncated {
        /// Byte offset.
        offset: usize,
        /// Index of the record being read.
        record: u64,
        /// Records the header promised.
        count: u64,
    },
    /// An id is not UTF-8 or not a valid id ([`validate_id`](crate::validate::validate_id)): an
    /// id with `:` would collide in the Redis key schema and escape `reshard`'s key census.
    #[error("record {record} at offset {offset}: id {message}")]
    BadId {
        /// Byte offset.
        offset: usize,
        /// Index of the record.
        record: u64,
        /// What is wrong.
        message: String,
    },
    /// Bytes follow the last record.
    #[error("{extra} unexpected bytes after the last record at offset {offset}")]
    Trailing {
        /// Byte offset.
        offset: usize,
        /// Bytes left over.
        extra: usize,
    },
    /// A value has the wrong length for `dim`.
    #[error("embedding value has {len} bytes; dim {dim} needs {} (float32) or {} (float16)", dim * 4, dim * 2)]
    ValueLength {
        /// Length found.
        len: usize,
        /// Expected dimensions.
        dim: usize,
    },
}

/// How a vector is stored as a Redis value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ValueEncoding {
    /// `dim` little-endian IEEE float32s (`4·dim` bytes): exact.
    #[default]
    F32,
    /// `dim` little-endian IEEE float16s (`2·dim` bytes, round to nearest even): half the memory,
    /// about 3 significant digits.
    F16,
}

impl ValueEncoding {
    /// Parses `f32` or `f16`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "f32" => Some(ValueEncoding::F32),
            "f16" => Some(ValueEncoding::F16),
            _ => None,
        }
    }

    /// Bytes per dimension.
    pub fn bytes_per_dim(self) -> usize {
        match self {
            ValueEncoding::F32 => 4,
            ValueEncoding::F16 => 2,
        }
    }
}

/// Encodes a vector as a value: little-endian float32s.
pub fn encode_value(values: &[f32]) -> Vec<u8> {
    encode_value_as(values, ValueEncoding::F32)
}

/// Encodes a vector as a value in `encoding`.
pub fn encode_value_as(values: &[f32], encoding: ValueEncoding) -> Vec<u8> {
    match encoding {
        ValueEncoding::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ValueEncoding::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
    }
}

/// Decodes a value of `dim` float32s (`4·dim` bytes) or float16s (`2·dim` bytes): the length
/// tells them apart, so readers need no setting and a store can move from one to the other.
pub fn decode_value(bytes: &[u8], dim: usize) -> Result<Vec<f32>, FormatError> {
    let mut out = vec![0.0; dim];
    decode_value_into(bytes, &mut out)?;
    Ok(out)
}

/// [`decode_value`] into a caller's row of `out.len()` floats (no allocation: the store's hot
/// path fills reused buffers with it). On an error `out` is left as it was.
pub fn decode_value_into(bytes: &[u8], out: &mut [f32]) -> Result<(), FormatError> {
    let dim = out.len();
    if bytes.len() == dim * 4 {
        for (value, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *value = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    } else if bytes.len() == dim * 2 {
        for (value, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *value = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
        }
    } else {
        return Err(FormatError::ValueLength { len: bytes.len(), dim });
    }
    Ok(())
}

/// The header of an export file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Dimensions per vector.
    pub dim: usize,
    /// Number of records.
    pub count: u64,
    /// Bundle the vectors belong to.
    pub bundle_id: String,
}

/// A decoded export file: ids in file order and their vectors, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingTable {
    /// The header.
    pub header: Header,
    /// Ids, in file order (an item's position is its FAISS label).
    pub ids: Vec<String>,
    /// `ids.len() * dim` floats.
    pub values: Vec<f32>,
}

impl EmbeddingTable {
    /// The vector of the `index`-th record.
    pub fn row(&self, index: usize) -> &[f32] {
        let dim = self.header.dim;
        &self.values[index * dim..(index + 1) * dim]
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.offset.checked_add(len)?;
        let slice = self.bytes.get(self.offset..end)?;
        self.offset = end;
        Some(slice)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
}

/// Decodes an export file, checking every length against the header.
pub fn decode_file(bytes: &[u8]) -> Result<EmbeddingTable, FormatError> {
    let mut r = Reader { bytes, offset: 0 };
    let header_error = |offset, message: &str| FormatError::Header { offset, message: message.to_string() };
    if r.take(4) != Some(MAGIC.as_slice()) {
        return Err(header_error(0, "magic is not CEMB"));
    }
    let version = r.u16().ok_or_else(|| header_error(4, "truncated"))?;
    if version != FORMAT_VERSION {
        return Err(header_error(4, &format!("format version {version}, expected {FORMAT_VERSION}")));
    }
    let encoding = r.u16().ok_or_else(|| header_error(6, "truncated"))?;
    if encoding != ENCODING_F32 {
        return Err(header_error(6, &format!("value encoding {encoding} is not float32 (0)")));
    }
    let dim = r.u32().ok_or_else(|| header_error(8, "truncated"))? as usize;
    if dim == 0 || dim > 65_536 {
        return Err(header_error(8, &format!("dim {dim} is outside 1..=65536")));
    }
    let count = r.u64().ok_or_else(|| header_error(12, "truncated"))?;
    let id_len = r.u16().ok_or_else(|| header_error(20, "truncated"))? as usize;
    let bundle_id = r
        .take(id_len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| header_error(22, "bundle id truncated or not UTF-8"))?
        .to_string();
    crate::validate::validate_id("bundle_id", &bundle_id).map_err(|e| header_error(22, &e.to_string()))?;
    // Never trust `count` for an allocation: cap it by what the bytes could hold.
    let min_record = 2 + dim * 4;
    let capacity = usize::try_from(count).unwrap_or(usize::MAX).min(bytes.len() / min_record);
    let mut ids = Vec::with_capacity(capacity);
    let mut values = Vec::with_capacity(capacity * dim);
    for record in 0..count {
        let start = r.offset;
        let truncated = FormatError::Truncated { offset: start, record, count };
        let len = r.u16().ok_or_else(|| truncated.clone())? as usize;
        let id = r.take(len).ok_or_else(|| truncated.clone())?;
        let bad_id = |message: String| FormatError::BadId { offset: start + 2, record, message };
        let id = std::str::from_utf8(id).map_err(|_| bad_id("is not UTF-8".into()))?;
        crate::validate::validate_id("id", id).map_err(|e| bad_id(e.to_string()))?;
        let payload = r.take(dim * 4).ok_or(truncated)?;
        ids.push(id.to_string());
        values.extend(payload.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
    }
    if r.offset != bytes.len() {
        return Err(FormatError::Trailing { offset: r.offset, extra: bytes.len() - r.offset });
    }
    Ok(EmbeddingTable { header: Header { dim, count, bundle_id }, ids, values })
}

/// Encodes an export file (the inverse of [`decode_file`]). Ids longer than 65535 bytes are a
/// caller bug (ids are validated to 64 bytes).
pub fn encode_file(bundle_id: &str, dim: usize, ids: &[&str], values: &[f32]) -> Vec<u8> {
    assert_eq!(values.len(), ids.len() * dim, "values must hold ids.len() * dim floats");
    let mut out = Vec::with_capacity(22 + bundle_id.len() + ids.len() * (2 + 8 + dim * 4));
    out.extend(encode_header(bundle_id, dim, ids.len() as u64));
    for (index, id) in ids.iter().enumerate() {
        encode_record(&mut out, id, &values[index * dim..(index + 1) * dim]);
    }
    out
}

/// The header of a file of `count` records, for writers that stream the records after it.
pub fn encode_header(bundle_id: &str, dim: usize, count: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(22 + bundle_id.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&ENCODING_F32.to_le_bytes());
    out.extend_from_slice(&(dim as u32).to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(bundle_id.len() as u16).to_le_bytes());
    out.extend_from_slice(bundle_id.as_bytes());
    out
}

/// Appends one record (`id`, then its float32s) to `out`.
pub fn encode_record(out: &mut Vec<u8>, id: &str, values: &[f32]) {
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trip() {
        let bytes = encode_file("b1", 2, &["a", "bb"], &[1.0, -2.0, 0.5, 3.25]);
        let table = decode_file(&bytes).unwrap();
        assert_eq!(table.ids, vec!["a", "bb"]);
        assert_eq!(table.row(1), &[0.5, 3.25]);
        assert_eq!(table.header.bundle_id, "b1");
    }

    #[test]
    fn truncation_names_the_offset() {
        let bytes = encode_file("b1", 2, &["a", "bb"], &[1.0, -2.0, 0.5, 3.25]);
        let header_len = 22 + 2;
        let err = decode_file(&bytes[..bytes.len() - 1]).unwrap_err();
        assert_eq!(err, FormatError::Truncated { offset: header_len + 2 + 1 + 8, record: 1, count: 2 });
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(decode_file(&extra), Err(FormatError::Trailing { extra: 1, .. })));
        assert!(matches!(decode_file(b"NOPE"), Err(FormatError::Header { offset: 0, .. })));
        // Ids that would break the key schema are refused where they enter, with the record.
        let colon = encode_file("b1", 2, &["ok", "a:b"], &[0.0; 4]);
        assert!(matches!(decode_file(&colon), Err(FormatError::BadId { record: 1, .. })), "{:?}", decode_file(&colon));
        let bad_bundle = encode_file("b:1", 2, &["ok"], &[0.0; 2]);
        assert!(matches!(decode_file(&bad_bundle), Err(FormatError::Header { offset: 22, .. })));
    }

    #[test]
    fn value_length_is_checked() {
        assert_eq!(decode_value(&encode_value(&[1.5, 2.5]), 2).unwrap(), vec![1.5, 2.5]);
        assert_eq!(decode_value(&[0; 7], 2), Err(FormatError::ValueLength { len: 7, dim: 2 }));
    }
}
