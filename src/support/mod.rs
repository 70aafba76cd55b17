//! Leaf helpers shared by the layers that start processes (launch and builder):
//! diagnostics and shell quoting. Nothing here depends on another veil module, so
//! either layer can use it without depending on the other.

pub mod diag;
pub mod shell;
