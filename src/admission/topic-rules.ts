/** Limits on topics, checked wherever a topic enters the hub (SUBSCRIBE, PUBLISH, API). */
import type { RejectReason } from '../observability/metrics.js'

export interface TopicLimits {
  maxTopicLength: number
  maxTopicLevels: number
}

export function checkTopic(topic: string, limits: TopicLimits): { reason: RejectReason; message: string } | null {
  if (topic.length === 0) return { reason: 'bad_topic', message: 'empty topic' }
  if (topic.length > limits.maxTopicLength) {
    return { reason: 'topic_too_long', message: `topic of ${topic.length} characters exceeds ${limits.maxTopicLength}` }
  }
  let levels = 1
  for (let i = 0; i < topic.length; i++) if (topic.charCodeAt(i) === 47) levels++
  if (levels > limits.maxTopicLevels) return { reason: 'topic_too_deep', message: `topic of ${levels} levels exceeds ${limits.maxTopicLevels}` }
  if (topic.includes('\u0000')) return { reason: 'bad_topic', message: 'topic contains U+0000' }
  if (topic.includes('\uFFFD')) return { reason: 'bad_topic', message: 'topic is not valid UTF-8' }
  return null
}

/**
 * Topics no client may publish to, superusers included: the broker's own (`$SYS/`) and the hub's
 * (`$iothub/`: the events it publishes, src/events/mqtt-events.ts) — what arrives there is the
 * broker's or the hub's word, which no client can forge. The prefix refused, or null.
 */
export function reservedTopic(topic: string): string | null {
  for (const prefix of RESERVED_PREFIXES) if (topic.startsWith(prefix)) return prefix
  return null
}

const RESERVED_PREFIXES = ['$SYS/', '$iothub/'] as const
