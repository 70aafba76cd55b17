pub mod identity;
pub mod spawn;
pub mod userns;
