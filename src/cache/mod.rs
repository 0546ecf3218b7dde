//! The response cache: keys ([`key`]), stored responses ([`entry`]) and the stores.

pub mod entry;
pub mod key;
