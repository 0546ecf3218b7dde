//! The semantic cache: reworded requests answered from an entry stored for another request with
//! the same context, when their compared texts are similar enough and carry the same literals.

pub mod guard;
