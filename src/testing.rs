//! Test helpers shared by the unit tests: a deterministic generator of hostile inputs.

/// A xorshift64 generator: deterministic, so a failing input can be reproduced from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }

    /// `input` with a few random bytes replaced, inserted or removed.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        const INTERESTING: &[u8] = b"{}[]\",:\\<>/&;%0\r\n \x00\xff";
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(out.len() + 1);
            let byte = if self.below(2) == 0 {
                INTERESTING[self.below(INTERESTING.len())]
            } else {
                self.next() as u8
            };
            match self.below(3) {
                0 if at < out.len() => out[at] = byte,
                1 if at < out.len() => {
                    out.remove(at);
                }
                _ => out.insert(at, byte),
            }
        }
        out
    }
}
