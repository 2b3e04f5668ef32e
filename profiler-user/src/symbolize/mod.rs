//! Names for addresses, through blazesym, behind one small API with caches of finished frames.
//!
//! blazesym's symbolizer is not `Send`: a [`Symbolizer`] lives on the one thread that builds
//! profiles. Demangling dominates the cost, so the caches hold finished frames per file offset
//! (user) or address (kernel), not just symbol tables.

mod frames;
pub mod gopclntab;
mod gopclntab_inline;
mod sigbus;
mod symbolizer;

pub use frames::{Frame, Frames};
pub use symbolizer::{CacheStats, Symbolizer};
