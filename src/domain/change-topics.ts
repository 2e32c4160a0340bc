/**
 * The change topics of a device (as the device names them, inside its namespace) and the
 * device property each one carries. A device subscribing to one of them asks to be told when
 * that property changes: that subscription is a *subscription entity*.
 */
import { topicMatches } from './topic-match.js'

export const CHANGE_TOPICS = {
  attributes: 'v1/devices/me/attributes',
  telemetry: 'v1/devices/me/telemetry',
  commands: 'v1/devices/me/commands',
  raw: 'v1/devices/me/raw'
} as const

export type ChangeProperty = keyof typeof CHANGE_TOPICS

const PROPERTIES = Object.keys(CHANGE_TOPICS) as ChangeProperty[]

/** Where a device answers a command (upstream only; not a change topic). */
export const COMMAND_RESPONSE_TOPIC = 'v1/devices/me/command/response'

/** The first level every change topic shares (`v1`). */
const CHANGE_FIRST_LEVEL = sharedFirstLevel(Object.values(CHANGE_TOPICS))

/** The properties whose change topics `filter` (a device-side subscription filter) receives. */
export function changePropertiesOf(filter: string): ChangeProperty[] {
  // most filters are no change topic: their first level says so without matching all four (every SUBSCRIBE asks)
  if (!mayReachFirstLevel(filter, CHANGE_FIRST_LEVEL)) return []
  return PROPERTIES.filter((p) => topicMatches(filter, CHANGE_TOPICS[p]))
}

/** Whether `filter`'s first level is `level` or a wildcard (the only filters that can match a topic beginning with it). */
function mayReachFirstLevel(filter: string, level: string): boolean {
  const end = filter.indexOf('/')
  const first = end === -1 ? filter : filter.slice(0, end)
  return first === level || first === '+' || first === '#'
}

function sharedFirstLevel(topics: readonly string[]): string {
  const first = topics[0]!.split('/')[0]!
  if (topics.some((t) => t.split('/')[0] !== first)) throw new Error('change topics must share their first level')
  return first
}

/** The property a device-side topic name carries, when it is a change topic. */
export function changePropertyOfTopic(topic: string): ChangeProperty | undefined {
  return PROPERTIES.find((p) => CHANGE_TOPICS[p] === topic)
}
