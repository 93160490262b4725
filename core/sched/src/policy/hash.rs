//! A small, fast, deterministic hasher for fixed-size integer keys (the
//! fragmentation memo), without external crates.

use std::hash::{BuildHasherDefault, Hasher};

/// A small, fast, deterministic hasher (FxHash with a final mix) for
/// fixed-size integer keys.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher(u64);

const FX_K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(FX_K);
    }
    fn finish(&self) -> u64 {
        let h = self.0;
        (h ^ (h >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (h >> 17)
    }
}

/// `BuildHasher` for [`FxHasher`].
pub type FxBuild = BuildHasherDefault<FxHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hasher_spreads_keys() {
        use std::hash::BuildHasher;
        let b = FxBuild::default();
        assert_ne!(b.hash_one([1u64, 2, 3]), b.hash_one([1u64, 3, 2]));
        let mut h = FxHasher::default();
        h.write(b"0123456789");
        assert_ne!(h.finish(), FxHasher::default().finish());
    }
}
