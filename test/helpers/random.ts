/**
 * A repeatable pseudo-random sequence for tests that mix operations in no fixed pattern:
 * xorshift32 from `seed`, answering integers below `n`. The same seed gives the same run, so a
 * failure can be replayed.
 */
export function seededRandom(seed: number): (n: number) => number {
  let state = seed
  return (n) => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return (state >>> 0) % n
  }
}
