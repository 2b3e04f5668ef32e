//! The maps of the profiler's own hot paths (profile building, symbolization, unwind rules) hash
//! with foldhash, not SipHash: their keys are the profiler's own data (offsets, interned IDs,
//! names and rules read from files), which no one chooses to make collide, and SipHash was a
//! tenth or more of each of those paths.

/// The hasher of [`HashMap`], for tables that hash by hand (`hashbrown::HashTable`).
pub(crate) type FastHasher = foldhash::fast::RandomState;

pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, FastHasher>;
