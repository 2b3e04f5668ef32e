//! Places tables' rows and page entries in the kernel's shared arrays: contiguous ranges of a
//! fixed capacity, first fit, freed ranges merged with their free neighbours. A request that
//! finds no hole large enough fails; the loader then evicts the least recently used tables and
//! asks again. Written here: allocator crates manage memory, not index ranges of a BPF map.

use std::collections::BTreeMap;

/// Free index ranges of an array of `capacity` slots.
#[derive(Debug)]
pub struct Arena {
    capacity: u32,
    /// Free ranges by start: start -> length; never adjacent (merged on free).
    free: BTreeMap<u32, u32>,
    used: u32,
}

impl Arena {
    pub fn new(capacity: u32) -> Self {
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Self {
            capacity,
            free,
            used: 0,
        }
    }

    /// The start of `len` free slots, now taken; `None` when no hole holds them. Zero slots
    /// take none, at 0.
    pub fn alloc(&mut self, len: u32) -> Option<u32> {
        if len == 0 {
            return Some(0);
        }
        let (&start, &hole) = self.free.iter().find(|&(_, &hole)| hole >= len)?;
        self.free.remove(&start);
        if hole > len {
            self.free.insert(start + len, hole - len);
        }
        self.used += len;
        Some(start)
    }

    /// Returns `len` slots from `start`, which `alloc` gave.
    pub fn free(&mut self, start: u32, len: u32) {
        if len == 0 {
            return;
        }
        debug_assert!(
            start
                .checked_add(len)
                .is_some_and(|end| end <= self.capacity)
        );
        self.used -= len;
        let (mut start, mut len) = (start, len);
        // Merge with the free range ending here and the one starting where this ends.
        if let Some((&before, &before_len)) = self.free.range(..start).next_back()
            && before + before_len == start
        {
            self.free.remove(&before);
            start = before;
            len += before_len;
        }
        if let Some(after_len) = self.free.remove(&(start + len)) {
            len += after_len;
        }
        self.free.insert(start, len);
    }

    /// Slots taken.
    pub fn used(&self) -> u32 {
        self.used
    }

    /// The largest request that would succeed now.
    #[cfg(test)]
    pub fn largest_hole(&self) -> u32 {
        self.free.values().copied().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_first_fit_and_merges_what_is_freed() {
        let mut arena = Arena::new(100);
        let a = arena.alloc(30).unwrap();
        let b = arena.alloc(30).unwrap();
        let c = arena.alloc(30).unwrap();
        assert_eq!((a, b, c), (0, 30, 60));
        assert_eq!(arena.alloc(11), None, "10 left");
        assert_eq!(arena.used(), 90);
        arena.free(a, 30);
        arena.free(c, 30);
        // Holes of 30 at 0 and 40 at 60: neither takes 50.
        assert_eq!(arena.largest_hole(), 40);
        assert_eq!(arena.alloc(50), None);
        arena.free(b, 30);
        assert_eq!(arena.largest_hole(), 100, "all merged");
        assert_eq!(arena.used(), 0);
        assert_eq!(arena.alloc(100), Some(0));
    }

    #[test]
    fn zero_slots_take_nothing() {
        let mut arena = Arena::new(0);
        assert_eq!(arena.alloc(0), Some(0));
        assert_eq!(arena.alloc(1), None);
        arena.free(0, 0);
        assert_eq!(arena.used(), 0);
    }

    /// Random allocations and frees never hand out a slot twice and account every slot.
    #[test]
    fn never_overlaps() {
        let mut arena = Arena::new(1000);
        let mut owner = vec![None::<usize>; 1000];
        let mut live: Vec<(u32, u32)> = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for step in 0..20_000 {
            if next() % 3 == 0 && !live.is_empty() {
                let (start, len) = live.swap_remove((next() % live.len() as u64) as usize);
                for slot in start..start + len {
                    owner[slot as usize] = None;
                }
                arena.free(start, len);
            } else {
                let len = (next() % 60) as u32 + 1;
                if let Some(start) = arena.alloc(len) {
                    for slot in start..start + len {
                        assert!(owner[slot as usize].is_none(), "slot {slot} given twice");
                        owner[slot as usize] = Some(step);
                    }
                    live.push((start, len));
                } else {
                    assert!(arena.largest_hole() < len);
                }
            }
            let taken = owner.iter().filter(|o| o.is_some()).count() as u32;
            assert_eq!(arena.used(), taken);
        }
    }
}
