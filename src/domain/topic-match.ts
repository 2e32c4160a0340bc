/** MQTT topic matching (MQTT 3.1.1 §4.7), for the few places that test one filter against one name. */

/** Whether subscription `filter` would receive a message published on `topic`. */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/')
  const t = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true
    if (i >= t.length) return false
    if (f[i] !== '+' && f[i] !== t[i]) return false
  }
  return f.length === t.length
}
