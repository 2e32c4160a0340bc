/** EMQX v4 renders times as "YYYY-MM-DD HH:mm:ss" in the node's zone; ours is always UTC. */
export function emqxTime(ms: number): string {
  return new Date(ms).toISOString().slice(0, 19).replace('T', ' ')
}
