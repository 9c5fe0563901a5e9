//! A machine's seeded random generator, as a value a model checker can hash.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::hash::{Hash, Hasher};

/// A ChaCha generator seeded by the run: the only randomness a machine has.
#[derive(Clone, PartialEq, Eq)]
pub struct Draws(ChaCha8Rng);

impl Draws {
    /// The generator seeded with `seed`.
    pub fn seeded(seed: u64) -> Draws {
        Draws(ChaCha8Rng::seed_from_u64(seed))
    }
}

impl std::ops::Deref for Draws {
    type Target = ChaCha8Rng;
    fn deref(&self) -> &ChaCha8Rng {
        &self.0
    }
}

impl std::ops::DerefMut for Draws {
    fn deref_mut(&mut self) -> &mut ChaCha8Rng {
        &mut self.0
    }
}

// The rendering stays the generator's own, so a state's printed form does not change.
impl std::fmt::Debug for Draws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

// Where the stream stands is what sets the draws to come; the seed and stream are the
// machine's own and the same in every state of it.
impl Hash for Draws {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.get_word_pos().hash(state);
        self.0.get_stream().hash(state);
    }
}
