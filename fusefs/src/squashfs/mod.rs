//! A read-only, random-access squashfs reader over any [`crate::source::ReadAt`].
