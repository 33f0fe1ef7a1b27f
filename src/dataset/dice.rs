//! A seeded random source whose output is the same on every platform.
//!
//! `fastrand::Rng` is deterministic per seed, but a few of its helpers are not
//! portable: `usize` ranges depend on the pointer width and `fill` uses native byte
//! order. [`Dice`] only draws through 64-bit ranges and little-endian bytes, so a
//! seed gives the same data set on every machine.

/// A deterministic random source.
#[derive(Debug)]
pub struct Dice(fastrand::Rng);

impl Dice {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Dice {
        Dice(fastrand::Rng::with_seed(seed))
    }

    /// A raw 64-bit draw.
    pub fn u64(&mut self) -> u64 {
        self.0.u64(..)
    }

    /// A number in `0..n`. `n` must not be zero.
    pub fn below(&mut self, n: usize) -> usize {
        // Through u64 so that 32- and 64-bit platforms draw the same numbers.
        self.0.u64(..n as u64) as usize
    }

    /// An integer in `low..=high`.
    pub fn int(&mut self, low: i64, high: i64) -> i64 {
        self.0.i64(low..=high)
    }

    /// An item of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.0.f64() < p
    }

    /// A float in `low..high`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.0.f64()
    }

    /// A roughly normal draw with mean 0 and standard deviation 1 (Irwin–Hall: the
    /// sum of twelve uniforms), using only exact IEEE arithmetic so that it is
    /// bit-identical everywhere.
    pub fn gaussian(&mut self) -> f64 {
        (0..12).map(|_| self.0.f64()).sum::<f64>() - 6.0
    }

    /// A skewed index in `0..n` (`n` > 0): low indexes are drawn more often, like
    /// the few heavy users of an app. Half the draws are uniform so that every index
    /// still shows up; the first of 100 gets about 5 %.
    pub fn skewed(&mut self, n: usize) -> usize {
        let x = self.0.f64();
        let x = if self.0.bool() { x } else { x * x };
        ((x * n as f64) as usize).min(n - 1)
    }

    /// Fills `bytes` with random bytes (little-endian words, unlike `fastrand`'s
    /// native-endian `fill`).
    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.0.u64(..).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    /// A random version-4 UUID in its usual text form.
    pub fn uuid(&mut self) -> String {
        let high = (self.u64() & !0xf000) | 0x4000;
        let low = (self.u64() & !(0xc << 60)) | (0x8 << 60);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            high >> 32,
            (high >> 16) & 0xffff,
            high & 0xffff,
            low >> 48,
            low & 0xffff_ffff_ffff
        )
    }

    /// `length` random letters and digits, like an identity provider's user ids.
    pub fn token(&mut self, length: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..length)
            .map(|_| char::from(self.pick(ALPHABET)))
            .collect()
    }

    /// `count` lowercase hex digits.
    pub fn hex(&mut self, count: usize) -> String {
        let text = format!("{:016x}", self.u64());
        text[..count.min(16)].to_owned()
    }
}
