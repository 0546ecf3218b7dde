//! The response cache: keys ([`key`]), stored responses ([`entry`]) and the stores ([`redis`]).

pub mod entry;
pub mod key;
pub mod redis;
