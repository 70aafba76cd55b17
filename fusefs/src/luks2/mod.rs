//! LUKS2: header parsing, keyslot unlock, data-segment decryption and volume creation.
