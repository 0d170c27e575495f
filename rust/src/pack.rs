//! Pack: place documents into rows of at most `max_length` tokens, best-fit-decreasing, never
//! splitting a document.
//!
//! ```text
//! window of documents (lengths):  7 3 5 2 6 4        max_length = 10
//! sorted, longest first:          7 6 5 4 3 2
//! best fit (fullest row that still has room):
//!   row 0: [7 3]      row 1: [6 4]      row 2: [5 2]
//! ```
//!
//! Ties keep input order, so the result depends only on the window's contents; the seed then
//! shuffles the order of the rows so that rows of similar fill do not cluster.

use std::collections::BTreeSet;

/// Rows as lists of document indices (into the window), each in placement order.
pub fn best_fit_decreasing(lengths: &[usize], max_length: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut rows: Vec<Vec<usize>> = Vec::new();
    // (room left, row index): the first entry with room >= len is the best fit.
    let mut free: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut room: Vec<usize> = Vec::new();
    for doc in order {
        let len = lengths[doc];
        match free.range((len, 0)..).next().copied() {
            Some((left, row)) => {
                free.remove(&(left, row));
                rows[row].push(doc);
                room[row] = left - len;
                if room[row] > 0 {
                    free.insert((room[row], row));
                }
            }
            None => {
                let row = rows.len();
                rows.push(vec![doc]);
                room.push(max_length.saturating_sub(len));
                if room[row] > 0 {
                    free.insert((room[row], row));
                }
            }
        }
    }
    rows
}

/// SplitMix64: a tiny, well-known deterministic generator (no dependency needed for a shuffle).
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_properties(lengths: &[usize], max: usize) -> Vec<Vec<usize>> {
        let rows = best_fit_decreasing(lengths, max);
        let mut seen = vec![0; lengths.len()];
        for row in &rows {
            let total: usize = row.iter().map(|&d| lengths[d]).sum();
            assert!(total <= max || row.len() == 1, "row over max length: {row:?}");
            for &d in row {
                seen[d] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "every document placed exactly once");
        rows
    }

    #[test]
    fn the_diagram_example() {
        assert_eq!(
            best_fit_decreasing(&[7, 3, 5, 2, 6, 4], 10),
            vec![vec![0, 1], vec![4, 5], vec![2, 3]]
        );
    }

    #[test]
    fn properties_hold_on_pseudo_random_lengths() {
        let mut rng = SplitMix64::new(7);
        for round in 0..50 {
            let max = 64 + round * 13;
            let lengths: Vec<usize> = (0..500).map(|_| 1 + (rng.next_u64() as usize % max)).collect();
            let rows = check_properties(&lengths, max);
            let tokens: usize = lengths.iter().sum();
            let lower_bound = tokens.div_ceil(max);
            assert!(
                rows.len() <= lower_bound * 12 / 10 + 2,
                "BFD is within 20% of optimal here"
            );
        }
    }

    #[test]
    fn empty_and_exact_fits() {
        assert!(best_fit_decreasing(&[], 8).is_empty());
        assert_eq!(best_fit_decreasing(&[8, 8], 8), vec![vec![0], vec![1]]);
        assert_eq!(best_fit_decreasing(&[4, 4, 4, 4], 8), vec![vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn shuffle_is_seeded() {
        let mut a: Vec<u32> = (0..20).collect();
        let mut b = a.clone();
        SplitMix64::new(1).shuffle(&mut a);
        SplitMix64::new(1).shuffle(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..20).collect::<Vec<_>>());
    }
}
