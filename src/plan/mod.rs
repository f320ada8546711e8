//! Decisions: which packages a request selects from a catalog.
//!
//! Pure functions from values to values, unit-tested without a disk.

pub mod cxx_sort;
pub mod diff;
pub mod gc;
pub mod generations;
pub mod layout;
pub mod resolve;
pub mod select;
