//! Leaf helpers shared by the layers that start processes (launch and builder):
//! diagnostics, shell quoting, user-namespace entry, the user's identity, starting
//! a process that shares memory until it execs, and catching terminating signals. Nothing here depends on another veil
//! module, so either layer can use it without depending on the other.

pub mod diag;
pub mod failure;
pub mod fds;
pub mod identity;
pub mod progress;
pub mod say;
pub mod shell;
pub mod signals;
pub mod spawn;
pub mod sys;
pub mod userns;
