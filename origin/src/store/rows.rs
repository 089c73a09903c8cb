//! [`EmbeddingRows`]: the answer to a batch lookup, in one buffer the caller keeps between calls.

use super::{Lookup, StoreError};

/// What a batch lookup found for one id.
#[derive(Debug, Clone, PartialEq)]
pub enum RowState {
    /// Found: the id's row holds its embedding.
    Found,
    /// The store answered: no such id.
    Missing,
    /// Not answered, or not usable (see [`StoreError`]).
    Failed(StoreError),
}

/// `len()` rows of `dim` floats in one contiguous buffer, one per id asked, in order, each with
/// its [`RowState`]. Reused across calls, a lookup allocates nothing per id (the store bench
/// measured a vector per id, and its free, as the largest cost of a batch on the client side).
#[derive(Debug, Clone, Default)]
pub struct EmbeddingRows {
    dim: usize,
    values: Vec<f32>,
    states: Vec<RowState>,
}

impl EmbeddingRows {
    /// An empty buffer for rows of `dim` floats.
    pub fn new(dim: usize) -> Self {
        EmbeddingRows { dim, values: Vec::new(), states: Vec::new() }
    }

    /// Floats per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows (ids of the last lookup).
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether the last lookup asked for nothing.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Makes room for `len` rows, all [`RowState::Missing`], keeping the allocation.
    pub fn reset(&mut self, len: usize) {
        self.states.clear();
        self.states.resize(len, RowState::Missing);
        self.values.resize(len * self.dim, 0.0);
    }

    /// Row `index`: its embedding, `None` for an id the store does not have, or why it failed.
    pub fn get(&self, index: usize) -> Result<Option<&[f32]>, &StoreError> {
        match &self.states[index] {
            RowState::Found => Ok(Some(self.row(index))),
            RowState::Missing => Ok(None),
            RowState::Failed(error) => Err(error),
        }
    }

    /// Row `index`'s state.
    pub fn state(&self, index: usize) -> &RowState {
        &self.states[index]
    }

    /// Rows found.
    pub fn found(&self) -> usize {
        self.states.iter().filter(|state| **state == RowState::Found).count()
    }

    /// Row `index`'s floats (meaningful when found).
    fn row(&self, index: usize) -> &[f32] {
        &self.values[index * self.dim..(index + 1) * self.dim]
    }

    /// Row `index`'s floats, to write into; set its state with [`Self::set`].
    pub(crate) fn row_mut(&mut self, index: usize) -> &mut [f32] {
        &mut self.values[index * self.dim..(index + 1) * self.dim]
    }

    /// Sets row `index`'s state.
    pub(crate) fn set(&mut self, index: usize, state: RowState) {
        self.states[index] = state;
    }

    /// Fills the rows from one [`Lookup`] per id (stores without a native
    /// [`super::EmbeddingStore::get_rows`]); a vector of the wrong length is [`StoreError::Corrupt`].
    pub fn fill_from(&mut self, lookups: Vec<Lookup>, describe: impl Fn(usize) -> String) {
        self.reset(lookups.len());
        for (index, lookup) in lookups.into_iter().enumerate() {
            let state = match lookup {
                Ok(Some(vector)) if vector.len() == self.dim => {
                    self.row_mut(index).copy_from_slice(&vector);
                    RowState::Found
                }
                Ok(Some(vector)) => RowState::Failed(StoreError::Corrupt {
                    key: describe(index),
                    message: format!("{} floats where {} were expected", vector.len(), self.dim),
                }),
                Ok(None) => RowState::Missing,
                Err(error) => RowState::Failed(error),
            };
            self.set(index, state);
        }
    }

    /// One [`Lookup`] per row (a vector each: for callers of [`super::EmbeddingStore::get_batch`]).
    pub fn to_lookups(&self) -> Vec<Lookup> {
        (0..self.len()).map(|index| self.get(index).map(|row| row.map(<[f32]>::to_vec)).map_err(Clone::clone)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_lookups_and_keep_their_buffer() {
        let unavailable = StoreError::Unavailable { shard: 1, message: "down".into() };
        let lookups = vec![Ok(Some(vec![1.0, 2.0])), Ok(None), Err(unavailable.clone()), Ok(Some(vec![3.0]))];
        let mut rows = EmbeddingRows::new(2);
        rows.fill_from(lookups, |index| format!("id{index}"));
        assert_eq!(rows.len(), 4);
        assert_eq!(rows.get(0), Ok(Some(&[1.0, 2.0][..])));
        assert_eq!(rows.get(1), Ok(None));
        assert_eq!(rows.get(2), Err(&unavailable));
        assert!(matches!(rows.state(3), RowState::Failed(StoreError::Corrupt { key, .. }) if key == "id3"));
        assert_eq!(rows.found(), 1);
        let back = rows.to_lookups();
        assert_eq!(back[0], Ok(Some(vec![1.0, 2.0])));
        assert_eq!(back[1], Ok(None));

        let capacity = rows.values.capacity();
        rows.reset(3);
        assert_eq!((rows.len(), rows.found(), rows.values.capacity()), (3, 0, capacity), "reset keeps the buffer");
    }
}
